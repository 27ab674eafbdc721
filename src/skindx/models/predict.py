"""The torch prediction path: stored uint8 images -> logits, through the shared
preprocessing contract (skindx.inference.preprocessing.normalize). Used by validation during
training, the evaluate stage and the torch side of the ONNX parity check, so it lives with the
model rather than in any one of them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from skindx.inference.preprocessing import PreprocessingContract, normalize


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: np.ndarray,
    contract: PreprocessingContract,
    batch_size: int = 64,
    *,
    device: torch.device | str | None = None,
    channels_last: bool = False,
) -> np.ndarray:
    """uint8 (N, S, S, 3) -> float32 logits (N, C), in eval mode, batch by batch (works on
    memory-mapped arrays). The model's train/eval mode is restored afterwards."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(
                normalize(np.asarray(images[start : start + batch_size]), contract)
            )
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            chunks.append(model(x).float().cpu().numpy())
    finally:
        model.train(was_training)
    if not chunks:
        out_features = _num_outputs(model)
        return np.zeros((0, out_features), np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _num_outputs(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else 0
