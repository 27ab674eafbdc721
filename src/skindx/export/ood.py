"""Package time: fit the out-of-distribution scorer (skindx.inference.ood) on the exported
model's own outputs, and measure it against images that are not dermoscopy.

Everything goes through the ONNX graph that serving runs (not the torch model), so the
features the scorer was fitted on are the ones it will score.

The probe set (`probe_images`) is what the issue asks the model to refuse: real photographs
shipped with scikit-image (astronaut, coffee, chelsea, rocket, ...; a few medical-looking ones
too: a retina fundus photo, a histology slide), flat colours, uniform and Gaussian noise, a
screenshot of rendered text and grayscale X-ray-like images. They are made or read locally, no
download. The report gives the AUROC of separating them from the test split's images, per
group and overall, and the share of test images the threshold rejects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from skindx.inference.model import INPUT_NAME, POOLED_OUTPUT, create_session
from skindx.inference.ood import (
    DEFAULT_PASS_RATE,
    OodScorer,
    auroc,
    energy,
    fit_scorer,
)
from skindx.inference.preprocessing import PreprocessingContract, normalize, resize_to_contract

# scikit-image's bundled sample photographs (no download): everyday scenes and objects, plus
# medical-looking non-dermoscopy (fundus, histology) as the hard cases
SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "coins",
    "moon",
    "page",
    "text",
    "clock",
    "hubble_deep_field",
    "colorwheel",
    "logo",
    "grass",
    "gravel",
    "brick",
    "immunohistochemistry",
    "retina",
)


def skimage_photos() -> dict[str, Image.Image]:
    """scikit-image's sample images as RGB PIL images (grayscale and RGBA converted)."""
    import skimage.data

    photos = {}
    for name in SKIMAGE_PHOTOS:
        array = np.asarray(getattr(skimage.data, name)())
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        photos[name] = Image.fromarray(array).convert("RGB")
    return photos


def flat_colours(size: int = 450) -> dict[str, Image.Image]:
    """Flat images: white, black, grey, a skin tone, a blank screenshot's light grey, RGB."""
    colours = {
        "white": (255, 255, 255),
        "black": (0, 0, 0),
        "grey": (128, 128, 128),
        "screenshot_blank": (240, 242, 246),  # an empty app window / Streamlit background
        "skin_tone": (224, 172, 150),
        "red": (200, 30, 30),
        "green": (40, 160, 60),
        "blue": (30, 60, 200),
    }
    return {
        f"flat_{name}": Image.new("RGB", (size * 4 // 3, size), rgb)
        for name, rgb in colours.items()
    }


def noise_images(size: int = 450, seed: int = 0) -> dict[str, Image.Image]:
    """Uniform RGB noise, Gaussian grey noise, and blurred colour noise (blotches)."""
    rng = np.random.default_rng(seed)
    shape = (size, size * 4 // 3)
    uniform = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    gaussian = np.clip(rng.normal(128, 50, shape), 0, 255).astype(np.uint8)
    blotches = Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).filter(
        ImageFilter.GaussianBlur(12)
    )
    return {
        "noise_uniform": Image.fromarray(uniform),
        "noise_gaussian": Image.fromarray(gaussian).convert("RGB"),
        "noise_blotches": blotches,
    }


def text_screenshot(width: int = 800, height: int = 600) -> Image.Image:
    """A screenshot-like image: a window title bar and lines of rendered text on white."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, 36), fill=(45, 55, 72))
    font = ImageFont.load_default(size=18)
    draw.text((12, 8), "Report.docx - Editor", fill=(255, 255, 255), font=font)
    lines = [
        "Dear patient, please find attached the results of your appointment.",
        "The next visit is scheduled for Monday at 10:30.",
        "Upload a dermatoscopic image of the lesion instead of this document.",
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod",
        "tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim.",
    ]
    for i, line in enumerate(lines * 4):
        draw.text((24, 60 + 26 * i), line, fill=(20, 20, 20), font=font)
    return image


def xray_like(size: int = 512, seed: int = 0) -> dict[str, Image.Image]:
    """Grayscale radiograph-like images: a dark field with bright, blurred bone-like bands
    (a chest with ribs and spine, a long bone), film grain on top."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    chest = 0.15 + 0.25 * np.exp(-(((x - 0.5) / 0.35) ** 2) - (((y - 0.55) / 0.45) ** 2))
    chest += 0.5 * np.exp(-(((x - 0.5) / 0.04) ** 2))  # spine
    for k in range(8):  # ribs: arcs on both sides
        centre = 0.2 + 0.08 * k
        arc = np.exp(-(((y - centre - 0.15 * (x - 0.5) ** 2 * 4) / 0.012) ** 2))
        chest += 0.35 * arc * (np.abs(x - 0.5) > 0.05) * (np.abs(x - 0.5) < 0.4)
    bone = 0.1 + 0.7 * np.exp(-(((x - 0.5 - 0.1 * (y - 0.5)) / 0.08) ** 2))
    bone -= 0.3 * np.exp(-(((x - 0.5 - 0.1 * (y - 0.5)) / 0.03) ** 2))  # marrow cavity
    images = {}
    for name, field in (("xray_chest", chest), ("xray_bone", bone)):
        grain = rng.normal(0, 0.03, field.shape)
        pixels = np.clip((field + grain) * 255, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(2))
        images[name] = image.convert("RGB")
    return images


def probe_images() -> dict[str, dict[str, Image.Image]]:
    """{group: {name: RGB image}}: the images that are not dermoscopy, by kind."""
    return {
        "photographs": skimage_photos(),
        "flat_colours": flat_colours(),
        "noise": noise_images(),
        "text_screenshot": {"text_screenshot": text_screenshot()},
        "xray_like": xray_like(),
    }


def onnx_outputs(
    onnx_path: str | Path,
    images: np.ndarray,
    contract: PreprocessingContract,
    batch_size: int = 64,
    session=None,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, S, S, 3) through the served graph -> (logits [N, C], pooled [N, D])."""
    session = session or create_session(onnx_path)
    logits, pooled = [], []
    for start in range(0, len(images), batch_size):
        x = normalize(np.asarray(images[start : start + batch_size]), contract)
        out = session.run(["logits", POOLED_OUTPUT], {INPUT_NAME: x})
        logits.append(out[0])
        pooled.append(out[1])
    return np.concatenate(logits), np.concatenate(pooled)


@dataclass(frozen=True)
class OodFitData:
    """What the package stage hands build_package: the images to fit, threshold and test on."""

    train_images: np.ndarray  # uint8 (N, S, S, 3)
    train_labels: np.ndarray  # (N,) class indices
    val_images: np.ndarray
    test_images: np.ndarray
    pass_rate: float = DEFAULT_PASS_RATE
    probes: dict[str, dict[str, Image.Image]] | None = None  # default: probe_images()


def _rounded(value: float) -> float:
    return round(float(value), 4)


def evaluate_scorer(
    scorer: OodScorer,
    test_scores: np.ndarray,
    probe_scores: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """AUROC (probes vs test images) overall and per group, and the test rejection rate."""
    every = np.array([s for group in probe_scores.values() for s in group.values()])
    return {
        "method": scorer.method,
        "threshold": float(scorer.threshold),
        "auroc": _rounded(auroc(test_scores, every)),
        "test_rejection_rate": _rounded(1.0 - scorer.in_distribution(test_scores).mean()),
        "probe_rejection_rate": _rounded(1.0 - scorer.in_distribution(every).mean()),
        "n_test_images": int(len(test_scores)),
        "n_probe_images": int(len(every)),
        "auroc_by_group": {
            group: _rounded(auroc(test_scores, np.array(list(scores.values()))))
            for group, scores in probe_scores.items()
        },
        "accepted_probes": sorted(
            name
            for scores in probe_scores.values()
            for name, s in scores.items()
            if scorer.in_distribution(np.array([s]))[0]
        ),
    }


def resize_probes(
    probes: dict[str, dict[str, Image.Image]], contract: PreprocessingContract
) -> tuple[list[tuple[str, str]], np.ndarray]:
    keys = [(group, name) for group, images in probes.items() for name in images]
    pixels = np.stack([resize_to_contract(probes[g][n], contract) for g, n in keys])
    return keys, pixels


def fit_and_report(
    onnx_path: str | Path,
    contract: PreprocessingContract,
    data: OodFitData,
    *,
    stages: dict[str, int],
    n_classes: int,
) -> tuple[OodScorer, dict[str, Any]]:
    """Fit on train, threshold on val, report against the probes and the test images, with
    the AUROC each alternative would have had (one stage alone, the energy score)."""
    session = create_session(onnx_path)

    def outputs(images):
        return onnx_outputs(onnx_path, images, contract, session=session)

    _, train_pooled = outputs(data.train_images)
    _, val_pooled = outputs(data.val_images)
    scorer = fit_scorer(
        train_pooled,
        data.train_labels,
        val_pooled,
        stages=stages,
        n_classes=n_classes,
        pass_rate=data.pass_rate,
    )
    test_logits, test_pooled = outputs(data.test_images)
    probes = data.probes if data.probes is not None else probe_images()
    keys, pixels = resize_probes(probes, contract)
    probe_logits, probe_pooled = outputs(pixels)
    test_scores, probe_scores = scorer.score(test_pooled), scorer.score(probe_pooled)
    grouped: dict[str, dict[str, float]] = {}
    for (group, name), value in zip(keys, probe_scores, strict=True):
        grouped.setdefault(group, {})[name] = float(value)
    report = evaluate_scorer(scorer, test_scores, grouped)
    alternatives = {
        f"mahalanobis {name} only": (test, scorer.components(probe_pooled)[name])
        for name, test in scorer.components(test_pooled).items()
    }
    alternatives["energy"] = (energy(test_logits), energy(probe_logits))
    report["auroc_by_method"] = {
        f"{scorer.method} (all stages, served)": report["auroc"],
        **{name: _rounded(auroc(t, p)) for name, (t, p) in alternatives.items()},
    }
    report["val_pass_rate"] = scorer.info["threshold_on"]["pass_rate"]
    report["probe_scores"] = {g: {n: _rounded(v) for n, v in s.items()} for g, s in grouped.items()}
    return scorer, report


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The card's copy of the report: the headline numbers without per-image scores."""
    keys = ("auroc", "test_rejection_rate", "n_test_images", "n_probe_images", "auroc_by_group")
    return {k: report[k] for k in keys if k in report}
