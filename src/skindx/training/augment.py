"""Batch augmentation in torch, on the training device, then the contract's normalisation.

All geometric augmentations (random resized crop, flips, 90° rotations) of one image are
folded into a single affine sampling grid, so a whole batch is transformed by one
`grid_sample` call. Flips and rotations alone map pixel centres onto pixel centres, so they
are exact. Colour jitter scales brightness, contrast and saturation by random factors in
[1 - s, 1 + s]. Random numbers come from the caller's CPU generator: the same seed gives the
same augmentations on any device.

Without augmentation (evaluation) the output equals skindx.inference.preprocessing.normalize.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from skindx.inference.preprocessing import PreprocessingContract

# 90° rotations of the sampling grid, counter-clockwise k times
_ROT90 = torch.tensor(
    [
        [[1.0, 0.0], [0.0, 1.0]],
        [[0.0, -1.0], [1.0, 0.0]],
        [[-1.0, 0.0], [0.0, -1.0]],
        [[0.0, 1.0], [-1.0, 0.0]],
    ]
)
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentConfig:
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    random_resized_crop_scale: tuple[float, float] | None = (0.7, 1.0)
    color_jitter: float = 0.1
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> AugmentConfig:
        params = dict(params or {})
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown train.augment keys {sorted(unknown)}")
        for key in ("random_resized_crop_scale", "crop_ratio"):
            if params.get(key) is not None:
                params[key] = tuple(float(v) for v in params[key])
        return cls(**params)

    @property
    def geometric(self) -> bool:
        return self.hflip or self.vflip or self.rot90 or self.random_resized_crop_scale is not None


class BatchTransform:
    """uint8 NHWC batch -> normalised float32 NCHW batch (augmented when `train`)."""

    def __init__(
        self,
        contract: PreprocessingContract,
        augment: AugmentConfig | None = None,
        *,
        channels_last: bool = False,
    ) -> None:
        self.augment = augment or AugmentConfig(False, False, False, None, 0.0)
        self.channels_last = channels_last
        self.mean = torch.tensor(contract.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(contract.std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(
        self, images: torch.Tensor, *, train: bool, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"expected uint8 (N, H, W, 3), got {images.dtype} {tuple(images.shape)}"
            )
        x = images.permute(0, 3, 1, 2).float() / 255.0
        if train:
            if self.augment.geometric:
                x = self._geometric(x, generator)
            if self.augment.color_jitter > 0:
                x = self._color(x, generator)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        x = (x - mean) / std
        return x.contiguous(
            memory_format=torch.channels_last if self.channels_last else torch.contiguous_format
        )

    def _uniform(self, n: int, low: float, high: float, g: torch.Generator | None) -> torch.Tensor:
        return torch.rand(n, generator=g) * (high - low) + low

    def _geometric(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        n, cfg = x.shape[0], self.augment
        # grid coordinates q in [-1, 1]^2 are flipped/rotated, then scaled and shifted into
        # the crop window: p_in = S @ R @ Flip @ q + c
        flip = torch.ones(n, 2)
        if cfg.hflip:
            flip[:, 0] = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        if cfg.vflip:
            flip[:, 1] = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        k = (
            torch.randint(0, 4, (n,), generator=g)
            if cfg.rot90
            else torch.zeros(n, dtype=torch.long)
        )
        linear = _ROT90[k] * flip[:, None, :]
        scale = torch.ones(n, 2)
        shift = torch.zeros(n, 2)
        if cfg.random_resized_crop_scale is not None:
            lo, hi = cfg.random_resized_crop_scale
            area = self._uniform(n, lo, hi, g)
            log_r = self._uniform(n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), g)
            ratio = torch.exp(log_r)
            # crop width/height as fractions of the image side (clipped to the image)
            scale[:, 0] = torch.sqrt(area * ratio).clamp(max=1.0)
            scale[:, 1] = torch.sqrt(area / ratio).clamp(max=1.0)
            shift = (torch.rand(n, 2, generator=g) * 2 - 1) * (1 - scale)
        theta = torch.cat([scale[:, :, None] * linear, shift[:, :, None]], dim=2).to(x.device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )

    def _color(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        n, s = x.shape[0], self.augment.color_jitter
        factors = self._uniform(3 * n, 1 - s, 1 + s, g).view(3, n, 1, 1, 1).to(x.device)
        luma = torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)
        x = x * factors[0]  # brightness
        grey = (x * luma).sum(dim=1, keepdim=True)
        x = (x - grey.mean(dim=(2, 3), keepdim=True)) * factors[1] + grey.mean(
            dim=(2, 3), keepdim=True
        )
        grey = (x * luma).sum(dim=1, keepdim=True)
        x = (x - grey) * factors[2] + grey  # saturation
        return x.clamp_(0.0, 1.0)
