"""THE preprocessing contract: one definition for the preprocess stage, training-time
evaluation, ONNX export parity and the serving API. numpy + PIL only (never torch).

An image becomes a model input in two steps (three with `jpeg_draft`):
  0. `apply_draft`, before the pixels are decoded: with `jpeg_draft` a JPEG is decoded by
     libjpeg's DCT-domain scaling at 1/2, 1/4 or 1/8 of its size, the smallest scale that keeps
     both sides at least `input_size` (PIL `Image.draft`). Much less work than a full decode of
     a large upload, and different pixels, so it is part of the contract.
  1. `resize_to_contract`: PIL RGB image -> uint8 array (size, size, 3): the crop and resize
     (`crop_and_resize`), then the contract's colour constancy, if any. This is what the
     preprocess stage stores, and what serving computes from an upload.
  2. `normalize`: uint8 (N, H, W, 3) -> float32 (N, 3, H, W), scaled to [0, 1], then
     (x - mean) / std per channel, RGB order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_POLICIES = ("shorter_side_center_crop", "stretch")
# Colour constancy: "none", or "shades_of_gray" (Finlayson & Trezzi 2004, the ISIC 2018/2019
# winners' normalisation): each channel scaled so that its Minkowski p-norm mean is the same,
# which removes a global colour cast of the dermatoscope's light and camera.
COLOR_CONSTANCY = ("none", "shades_of_gray")


@dataclass(frozen=True)
class PreprocessingContract:
    input_size: int
    resize_policy: str = "shorter_side_center_crop"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    channel_order: str = "RGB"
    layout: str = "NCHW"
    dtype: str = "float32"
    color_constancy: str = "none"
    color_constancy_power: float = 6.0
    jpeg_draft: bool = False
    notes: str = field(
        default="shorter_side_center_crop: the largest centred square is cut out and resized "
        "to input_size x input_size (PIL bilinear, antialiased). stretch: the whole image is "
        "resized to a square, ignoring its aspect ratio. color_constancy shades_of_gray: "
        "then each channel of the uint8 result times mean(e)/e_c, e_c its "
        "color_constancy_power-norm mean, rounded and clipped to uint8. Then x/255, "
        "(x - mean) / std. jpeg_draft: a JPEG is first decoded at the smallest DCT scale "
        "(1, 1/2, 1/4, 1/8) that keeps both sides at least input_size (PIL Image.draft).",
        compare=False,
    )

    def __post_init__(self) -> None:
        if self.resize_policy not in RESIZE_POLICIES:
            raise ValueError(
                f"unknown resize_policy {self.resize_policy!r}; expected one of {RESIZE_POLICIES}"
            )
        if self.input_size < 8:
            raise ValueError(f"input_size must be at least 8, got {self.input_size}")
        if self.color_constancy not in COLOR_CONSTANCY:
            raise ValueError(
                f"unknown color_constancy {self.color_constancy!r}; expected one of "
                f"{COLOR_CONSTANCY}"
            )
        if not self.color_constancy_power >= 1:
            raise ValueError(
                f"color_constancy_power must be at least 1 (1: gray world, large: max-RGB), "
                f"got {self.color_constancy_power}"
            )

    @classmethod
    def from_data_params(cls, data: dict[str, Any]) -> PreprocessingContract:
        """Build from the `data` section of params.yaml."""
        return cls(
            input_size=int(data["image_size"]),
            resize_policy=data.get("resize_policy", "shorter_side_center_crop"),
            mean=tuple(float(m) for m in data.get("mean", IMAGENET_MEAN)),
            std=tuple(float(s) for s in data.get("std", IMAGENET_STD)),
            color_constancy=str(data.get("color_constancy") or "none"),
            color_constancy_power=float(data.get("color_constancy_power", 6.0)),
            jpeg_draft=bool(data.get("jpeg_draft", False)),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessingContract:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


def apply_draft(image: Image.Image, contract: PreprocessingContract) -> bool:
    """Before `image` is decoded (right after Image.open): with the contract's `jpeg_draft`, ask
    the JPEG decoder for the reduced size the contract defines. True when it will decode
    reduced. Anything but a JPEG that is not yet loaded is left alone (PNG and WebP have no
    draft mode; a loaded image cannot be drafted), so the contract's pixels of those are the
    full decode's, in training and serving alike."""
    if not contract.jpeg_draft or image.format != "JPEG":
        return False  # (PIL's draft itself declines an image already loaded: it returns None)
    before = image.size
    image.draft("RGB", (contract.input_size, contract.input_size))
    return image.size != before


def resize_to_contract(image: Image.Image, contract: PreprocessingContract) -> np.ndarray:
    """PIL image (any mode already converted to RGB) -> uint8 (S, S, 3): the model's pixels."""
    pixels = crop_and_resize(image, contract)
    if contract.color_constancy == "shades_of_gray":
        pixels = shades_of_gray(pixels, contract.color_constancy_power)
    return pixels


def shades_of_gray(pixels: np.ndarray, power: float = 6.0) -> np.ndarray:
    """uint8 (..., H, W, 3) -> uint8, each image's channels scaled so that their `power`-norm
    means are equal (their mean kept): a grey world for power 1, max-RGB as power grows. An
    all-black image is returned as it is."""
    x = pixels.astype(np.float64)
    estimate = np.power(np.mean(np.power(x, power), axis=(-3, -2), keepdims=True), 1.0 / power)
    gains = np.divide(
        estimate.mean(axis=-1, keepdims=True),
        estimate,
        out=np.ones_like(estimate),
        where=estimate > 0,
    )
    return np.clip(np.rint(x * gains), 0, 255).astype(np.uint8)


def crop_and_resize(image: Image.Image, contract: PreprocessingContract) -> np.ndarray:
    """The geometric part of the contract alone, uint8 (S, S, 3) in the image's own colours:
    for views shown to people (the Grad-CAM overlay's background), never for the model."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    size = contract.input_size
    width, height = image.size
    box = None
    if contract.resize_policy == "shorter_side_center_crop":
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        box = (left, top, left + side, top + side)
    resized = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    return np.asarray(resized, dtype=np.uint8)


def normalize(batch: np.ndarray, contract: PreprocessingContract) -> np.ndarray:
    """uint8 (N, H, W, 3) or (H, W, 3) -> float32 (N, 3, H, W), mean/std normalised."""
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) uint8 images, got shape {batch.shape}")
    x = batch.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(contract.mean, np.float32)) / np.asarray(contract.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess(images: list[Image.Image], contract: PreprocessingContract) -> np.ndarray:
    """PIL images -> the model's float32 NCHW input."""
    return normalize(np.stack([resize_to_contract(im, contract) for im in images]), contract)
