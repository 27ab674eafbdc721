"""The `pretrain` section of params.yaml (conf/pretrain/default.yaml) as a checked dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

METHODS = ("simclr",)
# Splits whose images may be learnt from. Never "test": the encoder must not have seen the
# images the model is finally judged on (docs/pretraining.md).
ALLOWED_SPLITS = ("train", "val")


@dataclass(frozen=True)
class PretrainConfig:
    enabled: bool = False
    method: str = "simclr"
    arch: str = "resnet50"
    splits: tuple[str, ...] = ("train",)
    max_images: int | None = None
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_pct: float = 0.05
    temperature: float = 0.2
    projection_dim: int = 128
    projection_hidden: int = 512
    max_steps_per_epoch: int | None = None
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    num_workers: int = 0
    grayscale_p: float = 0.2
    views: dict[str, Any] = field(default_factory=dict)
    seed: int = 42

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown pretrain.method {self.method!r}; expected one of {METHODS}")
        bad = [s for s in self.splits if s not in ALLOWED_SPLITS]
        if bad or not self.splits:
            raise ValueError(
                f"pretrain.splits={list(self.splits)}: choose from {list(ALLOWED_SPLITS)}"
                + (
                    "; the test split is never used for pretraining (its images judge the model)"
                    if "test" in bad
                    else ""
                )
            )
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("pretrain.epochs must be >= 1 and pretrain.batch_size >= 2")
        if self.temperature <= 0:
            raise ValueError("pretrain.temperature must be > 0")
        if not 0.0 <= self.grayscale_p <= 1.0:
            raise ValueError("pretrain.grayscale_p is a probability in [0, 1]")
        if self.max_images is not None and self.max_images < 2:
            raise ValueError("pretrain.max_images must be null or >= 2")

    @classmethod
    def from_params(cls, section: dict[str, Any], seed: int | None = None) -> PretrainConfig:
        params = dict(section)
        unknown = set(params) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown keys in the pretrain section: {sorted(unknown)}")
        if params.get("splits") is not None:
            params["splits"] = tuple(str(s) for s in params["splits"])
        params["views"] = dict(params.get("views") or {})
        if isinstance(params.get("amp"), str):  # accept the train.amp spellings too
            params["amp"] = params["amp"].strip().lower() not in {"off", "false", "0", "no"}
        if seed is not None:
            params["seed"] = int(seed)
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["splits"] = list(self.splits)
        return out
