"""Test-time augmentation over the 8 dihedral views (4 rotations of the image and of its
mirror): a dermoscopy image has no canonical orientation, so each view is as valid an input as
the original, and averaging the model's calibrated probabilities over them removes the part of
its answer that depends on how the dermatoscope was held.

Torch-free (numpy and the package's ONNX session), so evaluation and serving share it.
"""

from __future__ import annotations

import numpy as np

from skindx.inference.model import PackagedModel, softmax
from skindx.inference.preprocessing import normalize

DIHEDRAL_VIEWS = 8


def dihedral_views(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) square images -> (8, N, H, W, C): rotations by 0, 90, 180 and 270 degrees,
    then the same of the left-right mirror. View 0 is the image itself."""
    return np.ascontiguousarray(
        np.stack([dihedral_view(images, index) for index in range(DIHEDRAL_VIEWS)])
    )


def dihedral_view(images: np.ndarray, index: int) -> np.ndarray:
    """View `index` (0-7) of dihedral_views alone, (N, H, W, C), a view of `images` (no copy):
    for callers that score one view at a time, so that 8 copies of a split never sit in memory."""
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected square (N, S, S, C) images, got shape {images.shape}")
    if not 0 <= index < DIHEDRAL_VIEWS:
        raise ValueError(f"view index {index} is not in 0..{DIHEDRAL_VIEWS - 1}")
    base = images if index < 4 else images[:, :, ::-1]
    return np.rot90(base, index % 4, axes=(1, 2))


def tta_probabilities(
    model: PackagedModel,
    images: np.ndarray,
    *,
    batch_size: int = 64,
    first_view: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 (N, S, S, 3) at the contract's size -> (N, C) calibrated probabilities averaged
    over the 8 views (one ONNX batch of up to 8 x batch_size images per chunk). `first_view`:
    the images' own (N, C) probabilities when the caller already has them (serving does: the
    plain pass also gives the CAM features and the OOD score), so only the 7 others run."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        views = dihedral_views(chunk)  # (8, n, S, S, 3)
        known = None if first_view is None else first_view[start : start + batch_size]
        if known is not None:
            views = views[1:]
        flat = views.reshape(-1, *views.shape[2:])
        logits, _ = model.run(normalize(flat, model.contract))
        probs = softmax(logits, model.temperature).reshape(len(views), len(chunk), -1)
        total = probs.sum(axis=0) + (0 if known is None else known)
        out.append((total / DIHEDRAL_VIEWS).astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, len(model.classes)), np.float32)


def plain_probabilities(
    model: PackagedModel, images: np.ndarray, *, batch_size: int = 256
) -> np.ndarray:
    """The same images without TTA: (N, C) calibrated probabilities of view 0 alone."""
    out = []
    for start in range(0, len(images), batch_size):
        logits, _ = model.run(normalize(images[start : start + batch_size], model.contract))
        out.append(softmax(logits, model.temperature))
    return np.concatenate(out) if out else np.zeros((0, len(model.classes)), np.float32)
