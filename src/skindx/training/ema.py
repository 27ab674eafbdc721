"""An exponential moving average of the weights (train.ema), validated beside the trained
weights every epoch (skindx.training.loop.Trainer).

Why a small class rather than torch.optim.swa_utils.AveragedModel: the average must cover the
BatchNorm buffers too (running mean and variance: the EMA weights need statistics of their own
activations, which an average of the trained model's statistics tracks closely, as in timm's
ModelEmaV2), copy the integer `num_batches_tracked`, live in a plain state dict that a
weights-only checkpoint holds, and update with one fused `_foreach_lerp_` per step.

    ema = v * d + w * (1 - d),  d = min(decay, (1 + n) / (10 + n)) with `warmup`

The warm-up (n = number of updates so far) lets a short run's average forget the random
initialisation: with decay 0.999 alone, 300 steps would still hold 74 % of it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class EmaConfig:
    enabled: bool = False
    decay: float = 0.999
    warmup: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"train.ema.decay must be in (0, 1), got {self.decay}")

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> EmaConfig:
        params = dict(params or {})
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown train.ema keys {sorted(unknown)}")
        return cls(**params)


class ModelEma:
    """Holds `module`, a frozen copy of the model in eval mode whose state is the average."""

    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: bool = True) -> None:
        self.decay = float(decay)
        self.warmup = warmup
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        own = self.module.state_dict()
        averaged, targets = [], []
        for key, value in model.state_dict().items():
            mine = own[key]
            if mine.is_floating_point():
                averaged.append(mine)
                targets.append(value.detach())
            else:  # num_batches_tracked: follows the trained model
                mine.copy_(value)
        if averaged:
            torch._foreach_lerp_(averaged, targets, 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "state": {
                k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()
            },
            "updates": self.updates,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.module.load_state_dict(saved["state"])
        self.updates = int(saved["updates"])
