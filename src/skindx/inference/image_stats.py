"""Cheap per-image statistics for drift monitoring: what the prediction log stores per upload
and what the monitor's reference holds per test image (the same function on both sides).

Computed on the model's input (uint8 (S, S, 3) RGB under the preprocessing contract, i.e. after
the crop and resize of `resize_to_contract`): the pixels the model sees, so that a reference
built from data/processed/test_images.npy and the served uploads are comparable. Vectorised
numpy (about a millisecond at 224 px); no torch.

Keys (STAT_KEYS, stable: they are database columns of the prediction log):
  mean_r, mean_g, mean_b   channel means, 0..1
  std_r, std_g, std_b      channel standard deviations, 0..1
  brightness               mean luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B), 0..1
  hist_r0 .. hist_b7       8-bin histogram per channel (bins of 32 levels), each channel sums to 1
"""

from __future__ import annotations

import numpy as np

CHANNELS = ("r", "g", "b")
HIST_BINS = 8
MOMENT_KEYS: tuple[str, ...] = (
    *(f"mean_{c}" for c in CHANNELS),
    *(f"std_{c}" for c in CHANNELS),
    "brightness",
)
HIST_KEYS: tuple[str, ...] = tuple(f"hist_{c}{i}" for c in CHANNELS for i in range(HIST_BINS))
STAT_KEYS: tuple[str, ...] = MOMENT_KEYS + HIST_KEYS
_LUMA = np.array([0.299, 0.587, 0.114])
_LEVELS = np.arange(256, dtype=np.float64)


def image_stats(pixels: np.ndarray) -> dict[str, float]:
    """The STAT_KEYS of one uint8 RGB image (H, W, 3).

    Everything comes from one exact 256-level histogram per channel (np.bincount, the fastest
    pass numpy has over uint8 data): the moments are sums over the 256 levels, not the pixels."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8 or not pixels.size:
        raise ValueError(
            f"expected a non-empty uint8 (H, W, 3) image, got {pixels.dtype} {pixels.shape}"
        )
    flat = pixels.reshape(-1, 3)
    n = flat.shape[0]
    counts = np.stack([np.bincount(flat[:, c], minlength=256) for c in range(3)]) / n  # (3, 256)
    mean = counts @ _LEVELS
    std = np.sqrt(np.maximum(counts @ (_LEVELS * _LEVELS) - mean * mean, 0.0))
    hist = counts.reshape(3, HIST_BINS, -1).sum(axis=2).ravel()
    values = [*(mean / 255), *(std / 255), float(mean @ _LUMA) / 255, *hist]
    return {key: float(v) for key, v in zip(STAT_KEYS, values, strict=True)}


def batch_image_stats(images: np.ndarray) -> np.ndarray:
    """STAT_KEYS (columns) of a uint8 batch (N, H, W, 3), one row per image (the reference)."""
    return np.array([[s[k] for k in STAT_KEYS] for s in map(image_stats, images)], dtype=float)
