"""Class activation maps with numpy only, from the ONNX model's layer4 features.

The classifier head is global-average-pool -> dropout -> linear, so Grad-CAM's channel weights
(the spatial mean of d logit_c / d A_k) are exactly W[c, k] / (h * w); up to normalisation
Grad-CAM is therefore CAM = ReLU(sum_k W[c, k] A_k), which needs no gradients and no torch.
"""

from __future__ import annotations

import numpy as np


def class_activation_map(features: np.ndarray, weight: np.ndarray, class_index: int) -> np.ndarray:
    """features [K, h, w] (one image) and fc weight [C, K] -> raw CAM [h, w], ReLU applied."""
    if features.ndim == 4:
        if features.shape[0] != 1:
            raise ValueError("class_activation_map takes one image; index the batch first")
        features = features[0]
    if features.ndim != 3 or features.shape[0] != weight.shape[1]:
        raise ValueError(f"features {features.shape} do not match the CAM head {weight.shape}")
    cam = np.tensordot(weight[class_index].astype(np.float32), features.astype(np.float32), 1)
    return np.maximum(cam, 0.0)


def _linear_indices(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Half-pixel centres with edge clamping: the same sampling as cv2/PIL bilinear upscaling.
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


def resize_bilinear(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[h, w] -> [height, width] bilinear (size is (height, width)); meant for upscaling."""
    height, width = size
    y0, y1, fy = _linear_indices(array.shape[0], height)
    x0, x1, fx = _linear_indices(array.shape[1], width)
    a = array.astype(np.float32)
    rows = a[y0] * (1 - fy)[:, None] + a[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx)[None, :] + rows[:, x1] * fx[None, :]


def normalize_map(cam: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a flat map (no evidence anywhere) becomes all zeros."""
    cam = cam.astype(np.float32) - float(cam.min())
    peak = float(cam.max())
    return cam / peak if peak > 1e-12 else np.zeros_like(cam)


def cam_for_class(
    features: np.ndarray, weight: np.ndarray, class_index: int, size: tuple[int, int]
) -> np.ndarray:
    """The CAM of `class_index`, upsampled to `size` (height, width), in [0, 1]."""
    return normalize_map(resize_bilinear(class_activation_map(features, weight, class_index), size))


def jet_colormap(values: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 RGB with the classic jet map (blue = low, red = high)."""
    v = np.clip(values.astype(np.float32), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], np.float32)  # where R, G, B peak
    rgb = np.clip(1.5 - np.abs(4.0 * (v - centres)), 0.0, 1.0)
    return np.round(rgb * 255.0).astype(np.uint8)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend the coloured CAM over a uint8 RGB image [H, W, 3]; returns uint8 RGB [H, W, 3]."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    if cam.shape != image.shape[:2]:
        cam = normalize_map(resize_bilinear(cam, image.shape[:2]))
    heat = jet_colormap(cam).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * heat
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)
