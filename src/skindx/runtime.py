"""Where and how torch runs: the device, its thread and determinism settings, the seeds.

Shared by training, evaluation and export (none of which imports another for it). The CPU
thread count is skindx.inference.resources.cpu_threads, the rule serving uses too.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from skindx.inference.resources import cpu_threads


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def configure_runtime(device: torch.device) -> None:
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads())
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        # speed over bit-exactness on GPU: autotuned kernels and TF32 matmuls
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def seed_everything(seed: int) -> None:
    """Seed before building the model so that its random initialisation is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
