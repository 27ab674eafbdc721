"""Grad-CAM before and after, as one figure: for a few images, the overlay computed on layer4
(the last feature map: 2x2 at 64 px, a blurred band) beside the one /explain serves on layer3
through the package's cam.onnx (4x4), both for the predicted class, on the same package.

    python -m skindx.evaluation.cam_figure --model models/candidate \\
        --images ../shared/data/ham10000-fullres-sample/images --n 4 \\
        --out reports/gradcam-layer4-vs-layer3.png   # --maps-only: no image pixels

Torch-free (the package's ONNX graphs), so it runs wherever the package is served.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skindx.inference.cam import overlay
from skindx.inference.classes import CLASS_INFO
from skindx.inference.images import decode_image, full_view
from skindx.inference.model import PackagedModel, load_packaged_model, softmax
from skindx.inference.preprocessing import crop_and_resize, normalize, resize_to_contract

VIEW_SIZE = 224  # the overlays' side: the model's crop, enlarged


@dataclasses.dataclass(frozen=True)
class CamPair:
    name: str
    predicted: str  # class code
    confidence: float
    view: np.ndarray  # uint8 (VIEW_SIZE, VIEW_SIZE, 3): what the model saw, enlarged
    maps: dict[str, tuple[np.ndarray, tuple[int, int]]]  # layer -> ([0, 1] map, grid)


def cam_pairs(model: PackagedModel, images: Sequence[Path]) -> list[CamPair]:
    """Each image's layer4 and (when the package has cam.onnx) layer3 Grad-CAM for its
    predicted class."""
    layer4_only = dataclasses.replace(model, cam_session=None)
    view_contract = dataclasses.replace(model.contract, input_size=VIEW_SIZE)
    pairs = []
    for path in images:
        data = Path(path).read_bytes()
        decoded = decode_image(data, contract=model.contract)  # as the API decodes
        pixels = resize_to_contract(decoded.image, model.contract)
        image = full_view(decoded, data, VIEW_SIZE)  # the view: a second decode only if drafted
        logits, _ = model.run(normalize(pixels, model.contract))
        probs = softmax(logits[0], model.temperature)  # calibrated, as served
        index = int(np.argmax(probs))
        size = (VIEW_SIZE, VIEW_SIZE)
        maps = {}
        for variant in (layer4_only, model):
            cam, layer, grid = variant.explain(pixels, index, size=size)
            maps[layer] = (cam, grid)
        pairs.append(
            CamPair(
                path.name,
                model.classes[index],
                float(probs[index]),
                crop_and_resize(image, view_contract),
                maps,
            )
        )
    return pairs


def figure(pairs: Sequence[CamPair], title: str, *, maps_only: bool = False):
    """Rows: images; columns: the model's view, then one overlay per layer (coarsest first).
    `maps_only`: the maps alone, no image pixels (a figure that can be published without
    redistributing the images, e.g. HAM10000's, CC BY-NC)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({layer for p in pairs for layer in p.maps}, reverse=True)  # layer4, layer3
    columns = len(layers) + (0 if maps_only else 1)
    fig, axes = plt.subplots(
        len(pairs), columns, figsize=(3 * columns, 3 * len(pairs)), squeeze=False
    )
    for row, pair in zip(axes, pairs, strict=True):
        caption = f"{pair.name}: {CLASS_INFO[pair.predicted].name} ({pair.confidence:.0%})"
        if not maps_only:
            row[0].imshow(pair.view)
            row[0].set_title(caption.replace(": ", "\n"), fontsize=9)
        for ax, layer in zip(row[columns - len(layers) :], layers, strict=True):
            cam, grid = pair.maps[layer]
            if maps_only:
                ax.imshow(cam, cmap="jet", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(overlay(pair.view, cam))
            ax.set_title(f"Grad-CAM on {layer} ({grid[0]}x{grid[1]})", fontsize=9)
        if maps_only:
            row[0].set_title(f"{caption}\n{row[0].get_title()}", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("serving/model"))
    parser.add_argument("--images", type=Path, required=True, help="a folder of JPEG/PNG images")
    parser.add_argument("--n", type=int, default=4, help="how many images (sorted by name)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports/gradcam-layer4-vs-layer3.png"),
        help="the figure (.png, or .jpg for a smaller file)",
    )
    parser.add_argument(
        "--maps-only",
        action="store_true",
        help="the maps without the images under them (publishable without the images)",
    )
    args = parser.parse_args(argv)
    images = sorted(
        p for p in args.images.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
    )[: args.n]
    if not images:
        parser.error(f"no .jpg/.png images in {args.images}")
    model = load_packaged_model(args.model)
    if model.cam_session is None:
        print(
            f"{args.model}: no cam.onnx (layer4 is fine at this resolution): "
            "the figure shows layer4 only"
        )
    title = (
        f"{model.name} v{model.version}, {model.contract.input_size} px input:\n"
        "layer4 before, layer3 (what /explain serves) after"
    )
    fig = figure(cam_pairs(model, images), title, maps_only=args.maps_only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(f".{args.out.stem}.partial{args.out.suffix}")  # same format
    fig.savefig(partial, dpi=110)
    partial.replace(args.out)  # atomic: a reader never sees half a PNG
    print(f"wrote {args.out} ({len(images)} images)")
    return args.out


if __name__ == "__main__":
    main()
