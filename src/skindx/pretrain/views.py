"""SimCLR's two views of a batch, on the training device.

The geometric and colour part is the project's batch augmentation
(skindx.training.augment.BatchTransform: one sampling grid per batch, jitter, normalisation),
configured by `pretrain.views` with the AugmentConfig keys, so every option the training
recipe gains (TrivialAugment's hue, gamma and blur; rotations) is available here too. This
module adds what contrastive learning needs beyond it: two independent draws per image and
SimCLR's random conversion to grey (`pretrain.grayscale_p`), applied to the stored uint8
pixels first, so that both then go through the same grid, jitter and normalisation.
"""

from __future__ import annotations

from typing import Any

import torch

from skindx.inference.preprocessing import PreprocessingContract
from skindx.training.augment import AugmentConfig, BatchTransform

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as BatchTransform's saturation uses


class TwoViews:
    """uint8 NHWC batch -> (view_a, view_b), each a normalised float32 NCHW batch."""

    def __init__(
        self,
        contract: PreprocessingContract,
        views: dict[str, Any] | None = None,
        *,
        grayscale_p: float = 0.2,
        channels_last: bool = False,
    ) -> None:
        self.augment = AugmentConfig.from_params(views)
        self.transform = BatchTransform(contract, self.augment, channels_last=channels_last)
        self.grayscale_p = float(grayscale_p)

    def _grey(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.grayscale_p <= 0:
            return images
        pick = (torch.rand(images.shape[0], generator=generator) < self.grayscale_p).to(
            images.device
        )
        luma = torch.tensor(_LUMA, device=images.device)
        grey = (images.float() * luma).sum(dim=-1, keepdim=True).round().clamp(0, 255)
        grey = grey.to(torch.uint8).expand_as(images)
        return torch.where(pick.view(-1, 1, 1, 1), grey, images)

    def view(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.transform(self._grey(images, generator), train=True, generator=generator)

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view(images, generator), self.view(images, generator)
