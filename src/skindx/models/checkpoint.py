"""Checkpoints (written by training, read by evaluation and export): plain dicts of tensors and builtins, loadable with torch.load(weights_only=True).

Keys (docs/contracts.md): model_state, optimizer_state, scheduler_state, epoch, best_metric,
best_epoch, history, config; plus scaler_state and epochs_without_improvement for resuming.
`weights` says what model_state holds: "model" (the trained weights) or "ema" (their moving
average, train.ema; best.pt holds whichever validated better, so whatever loads model_state
evaluates, exports and serves the chosen weights); last.pt adds `ema_state` to resume the EMA.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

BEST, LAST = "best.pt", "last.pt"


def cpu_state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A true copy of the weights (state_dict() alone returns live references)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Atomic: written next to `path`, then renamed, so an interruption never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found: run the train stage first")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_model_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model from the checkpoint's `config["model"]` and load its weights (eval mode)."""
    from skindx.models.factory import build_model

    checkpoint = load_checkpoint(path)
    model_cfg = dict(checkpoint["config"]["model"])
    model_cfg["weights"] = "none"  # the checkpoint holds every weight
    model = build_model(**model_cfg)
    model.load_state_dict(checkpoint["model_state"])
    return model.eval(), checkpoint
