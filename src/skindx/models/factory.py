"""The model factory: a torchvision ResNet with the project's head, from config.

`build_model(arch, num_classes, dropout, weights, zero_init_residual)` where `weights` is
  - "none": random initialisation;
  - "imagenet": torchvision's ImageNet weights (downloaded once into the torch hub cache);
  - a path to a state dict (.pt/.pth loaded with weights_only=True, or .safetensors). A full
    model state, a training checkpoint (its `model_state`), a backbone-only ImageNet-style
    state dict (1000-class `fc`) or the pretrain stage's backbone.pt (no `fc` at all,
    skindx.models.weights) are accepted; a head that does not fit is skipped and stays
    randomly initialised. Every other tensor must fit: a missing or misshapen backbone key
    is an error, never a silent partial load.

`zero_init_residual` starts the last BatchNorm of every residual block at gamma = 0, so that each
block begins as the identity (Goyal et al. 2017, "Accurate, large minibatch SGD"; torchvision's
flag): a from-scratch network then trains like a shallow one in its first steps. It only shapes the
random initialisation; loaded weights replace it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models

from skindx.models.weights import missing_weights_hint

log = logging.getLogger(__name__)

ARCHS: dict[str, tuple[Any, Any]] = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2),
}
HEAD_PREFIX = "fc."


class ModelWeightsError(RuntimeError):
    """Weights could not be obtained or do not fit the architecture."""


def build_model(
    arch: str = "resnet50",
    num_classes: int = 7,
    dropout: float = 0.2,
    weights: str | Path | None = "none",
    zero_init_residual: bool = False,
) -> nn.Module:
    """A ResNet whose head is `fc = Sequential(Dropout(dropout), Linear(features, num_classes))`."""
    if arch not in ARCHS:
        raise ValueError(f"unknown model.arch {arch!r}; expected one of {sorted(ARCHS)}")
    constructor, imagenet = ARCHS[arch]
    model = constructor(weights=None, zero_init_residual=bool(zero_init_residual))
    model.fc = nn.Sequential(
        nn.Dropout(p=float(dropout)), nn.Linear(model.fc.in_features, num_classes)
    )

    choice = "none" if weights is None else str(weights)
    if choice.lower() == "none":
        return model
    if choice.lower() == "imagenet":
        state = _download_imagenet(arch, imagenet)
        source = f"torchvision {imagenet}"
    else:
        state = read_state_dict(choice)
        source = choice
    load_backbone(model, state, source=source)
    return model


def _download_imagenet(arch: str, weights_enum: Any) -> dict[str, torch.Tensor]:
    url = weights_enum.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    try:
        return weights_enum.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad hash a RuntimeError
        raise ModelWeightsError(
            f"model.weights=imagenet: could not get the {arch} ImageNet weights from {url} "
            f"({err}). This machine may have no internet access. Either download that file "
            f"elsewhere and put it at {cached} (set TORCH_HOME to move the cache), or set "
            "model.weights to the path of a local .pt/.pth/.safetensors state dict, or use "
            "model.weights=none."
        ) from err


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file (weights_only), unwrapping checkpoints."""
    path = Path(path)
    if not path.is_file():
        raise ModelWeightsError(
            f"model.weights={str(path)!r} is neither 'none', 'imagenet' nor an existing file."
            + missing_weights_hint(path)
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file or pickled objects that weights_only refuses
        raise ModelWeightsError(f"could not read weights from {path}: {err}") from err
    for key in ("model_state", "state_dict", "model"):  # training checkpoints of common tools
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelWeightsError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], *, source: str = "") -> None:
    """Load `state` into `model`; head tensors that do not fit are skipped (logged), anything
    else that does not fit is an error."""
    own = model.state_dict()
    fitting, skipped, wrong = {}, [], []
    for key, tensor in state.items():
        if key in own and own[key].shape == tensor.shape:
            fitting[key] = tensor
        elif key.startswith(HEAD_PREFIX):
            skipped.append(key)
        else:
            wrong.append(f"{key} {tuple(tensor.shape)}")
    missing = [k for k in own if k not in fitting]
    missing_body = [k for k in missing if not k.startswith(HEAD_PREFIX)]
    if wrong or missing_body:
        raise ModelWeightsError(
            f"weights from {source or 'state dict'} do not fit this architecture: "
            f"unexpected {wrong[:5]}{'…' if len(wrong) > 5 else ''}, "
            f"missing {missing_body[:5]}{'…' if len(missing_body) > 5 else ''}"
        )
    model.load_state_dict(fitting, strict=False)
    if skipped or missing:
        log.info(
            "loaded backbone from %s; head not loaded (skipped %s), kept at random init",
            source,
            skipped or "none",
        )
