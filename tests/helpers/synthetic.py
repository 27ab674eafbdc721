"""A small synthetic dataset in the HAM10000 layout (HAM10000_metadata.csv + images/*.jpg), for
the fast tests on a machine without ../shared/data (a fresh clone).

The images are real JPEGs: skin-toned noise with one lesion whose colour and shape depend on the
class (so that a model can learn something and per-class tests see distinct images), several
images per lesion (as in HAM10000, where splits must go by lesion), and metadata rows with every
column the data contract names. Deterministic: the same call writes the same bytes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from skindx.inference.classes import CLASS_CODES

COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
# class -> (lesion RGB, shape); the shapes differ as well as the colours
LOOKS: dict[str, tuple[tuple[int, int, int], str]] = {
    "akiec": ((200, 90, 80), "blotch"),
    "bcc": ((225, 170, 175), "ring"),
    "bkl": ((150, 110, 70), "square"),
    "df": ((120, 80, 60), "small"),
    "mel": ((40, 25, 30), "star"),
    "nv": ((110, 70, 45), "disc"),
    "vasc": ((170, 30, 60), "double"),
}
DX_TYPES = ("histo", "follow_up", "consensus", "confocal")
SEXES = ("male", "female", "unknown")
SITES = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest")
# lesions per class for the HAM-sized set: imbalanced like HAM10000 (nv largest, df smallest),
# enough lesions that every split gets every class
HAM_LESIONS = {"akiec": 18, "bcc": 20, "bkl": 24, "df": 16, "mel": 24, "nv": 60, "vasc": 16}


def draw_lesion(dx: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    width, height = size
    skin = np.array([228, 188, 160]) + rng.integers(-20, 20, 3)
    noise = rng.normal(0, 9, (height, width, 3))
    image = Image.fromarray(np.clip(skin + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    colour, shape = LOOKS[dx]
    fill = tuple(int(np.clip(c + rng.integers(-12, 12), 0, 255)) for c in colour)
    cx = width / 2 + rng.uniform(-0.08, 0.08) * width
    cy = height / 2 + rng.uniform(-0.08, 0.08) * height
    r = min(width, height) * rng.uniform(0.22, 0.32)
    box = (cx - r, cy - r * 0.8, cx + r, cy + r * 0.8)
    if shape == "disc":
        draw.ellipse(box, fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, int(r / 4)))
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "small":
        draw.ellipse((cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2), fill=fill)
    elif shape == "star":
        angles = np.linspace(0, 2 * np.pi, 11)[:-1]
        radii = np.where(np.arange(10) % 2 == 0, r, r / 2)
        draw.polygon(
            [(cx + d * np.cos(a), cy + d * np.sin(a)) for a, d in zip(angles, radii, strict=True)],
            fill,
        )
    elif shape == "double":
        draw.ellipse((cx - r, cy - r / 2, cx, cy + r / 2), fill=fill)
        draw.ellipse((cx, cy - r / 2, cx + r, cy + r / 2), fill=fill)
    else:  # blotch
        for _ in range(5):
            dx_, dy_ = rng.uniform(-r / 2, r / 2, 2)
            draw.ellipse(
                (cx + dx_ - r / 2, cy + dy_ - r / 2, cx + dx_ + r / 2, cy + dy_ + r / 2), fill
            )
    return image.filter(ImageFilter.GaussianBlur(1.0))


def make_synthetic_ham(
    dest: Path,
    lesions_per_class: dict[str, int] | int = HAM_LESIONS,
    *,
    size: tuple[int, int] = (200, 150),
    images_per_lesion: tuple[int, ...] = (1, 2, 1, 3),
    integer_ages: bool = False,
    seed: int = 0,
) -> Path:
    """Write the dataset into `dest` (created) and return it. `images_per_lesion` cycles over
    the lesions of each class; pass (1,) for one image per lesion."""
    if isinstance(lesions_per_class, int):
        lesions_per_class = dict.fromkeys(CLASS_CODES, lesions_per_class)
    rng = np.random.default_rng(seed)
    images = dest / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    lesion_no, image_no = 1, 24306  # HAM's ids start near ISIC_0024306
    for dx in CLASS_CODES:
        for i in range(lesions_per_class[dx]):
            lesion = f"HAM_{lesion_no:07d}"
            lesion_no += 1
            age = float(rng.integers(6, 17) * 5)
            meta = {
                "lesion_id": lesion,
                "dx": dx,
                "dx_type": DX_TYPES[i % len(DX_TYPES)],
                "age": str(int(age)) if integer_ages else f"{age:.1f}",
                "sex": SEXES[i % len(SEXES)],
                "localization": SITES[i % len(SITES)],
            }
            for _ in range(images_per_lesion[i % len(images_per_lesion)]):
                image_id = f"ISIC_{image_no:07d}"
                image_no += 1
                draw_lesion(dx, size, rng).save(images / f"{image_id}.jpg", quality=90)
                rows.append({**meta, "image_id": image_id})
    order = rng.permutation(len(rows))  # HAM's file is not sorted by class
    with (dest / "HAM10000_metadata.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows[i] for i in order)
    return dest


def make_synthetic_fullres(dest: Path, seed: int = 1) -> Path:
    """Like ham10000-fullres-sample: 70 images at 600x450, ten lesions per class, integer ages."""
    return make_synthetic_ham(
        dest, 10, size=(600, 450), images_per_lesion=(1,), integer_ages=True, seed=seed
    )


# HAM10000's images per class; lesions have 1.34 images on average (7,470 lesions)
HAM_IMAGES = {
    "akiec": 327,
    "bcc": 514,
    "bkl": 1099,
    "df": 115,
    "mel": 1113,
    "nv": 6705,
    "vasc": 142,
}
HAM_IMAGES_PER_LESION = (1, 1, 1, 2, 1, 1, 3, 1, 1, 1, 1, 2)


def synthetic_metadata(seed: int = 0) -> list[dict[str, str]]:
    """Metadata rows only, at HAM10000's scale and class balance (10,015 rows): for the split
    and cap tests, whose properties (fractions within 2 points, caps filled by whole lesions)
    need HAM's numbers, not its pixels."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, str]] = []
    lesion_no, image_no = 1, 24306
    for dx in CLASS_CODES:
        made, i = 0, 0
        while made < HAM_IMAGES[dx]:
            n = min(HAM_IMAGES_PER_LESION[i % len(HAM_IMAGES_PER_LESION)], HAM_IMAGES[dx] - made)
            lesion = f"HAM_{lesion_no:07d}"
            for _ in range(n):
                rows.append(
                    {
                        "lesion_id": lesion,
                        "image_id": f"ISIC_{image_no:07d}",
                        "dx": dx,
                        "dx_type": DX_TYPES[i % len(DX_TYPES)],
                        "age": f"{float(rng.integers(1, 18) * 5):.1f}",
                        "sex": SEXES[i % len(SEXES)],
                        "localization": SITES[i % len(SITES)],
                    }
                )
                image_no += 1
            made, i, lesion_no = made + n, i + 1, lesion_no + 1
    return [rows[i] for i in rng.permutation(len(rows))]
