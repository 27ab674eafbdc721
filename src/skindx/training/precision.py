"""train.amp: mixed precision on CUDA and on CPU.

    auto : CUDA AMP (bf16 where the GPU supports it, else fp16 with a gradient scaler); on CPU
           bf16 autocast when the CPU computes bf16 natively (AMX or AVX512-BF16), else fp32;
    cuda : CUDA AMP as `auto`, always fp32 on CPU (the recipe before train.amp covered CPU;
           `true` in older configs means this);
    on   : as `auto`, and bf16 autocast on any CPU (emulated, hence slow, without the support);
    off  : fp32 everywhere (`false` in older configs).

Why only native support: on a CPU without bf16 units (AVX2, AVX-512 without BF16) oneDNN
converts to fp32 and back around every matmul, which is slower than plain fp32.
What ran is recorded: `Precision.name` (`fp32`, `bf16-autocast`, `fp16-autocast+scaler`) is
logged to MLflow by the train stage, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

AMP_MODES = ("auto", "cuda", "on", "off")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def normalize_amp(value: object) -> str:
    """The mode of a train.amp value; booleans are the settings of older configs."""
    if value is True:
        return "cuda"
    if value is False or value is None:
        return "off"
    mode = str(value).lower()
    if mode not in AMP_MODES:
        raise ValueError(f"unknown train.amp {value!r}; expected one of {AMP_MODES}")
    return mode


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_bf16_support(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The CPU flag that gives native bf16 arithmetic (`amx_bf16`, `avx512_bf16`), or None."""
    flags = cpu_flags(cpuinfo)
    for flag in BF16_CPU_FLAGS:
        if flag in flags:
            return flag
    return None


@dataclass(frozen=True)
class Precision:
    enabled: bool
    dtype: torch.dtype
    scaler: bool
    reason: str

    @property
    def name(self) -> str:
        if not self.enabled:
            return "fp32"
        kind = "bf16" if self.dtype == torch.bfloat16 else "fp16"
        return f"{kind}-autocast{'+scaler' if self.scaler else ''}"


def resolve_precision(
    amp: object, device: torch.device, *, cpuinfo: str | Path = "/proc/cpuinfo"
) -> Precision:
    mode = normalize_amp(amp)
    if mode == "off":
        return Precision(False, torch.float32, False, "train.amp=off")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(True, torch.bfloat16, False, f"train.amp={mode}, CUDA with bf16")
        return Precision(True, torch.float16, True, f"train.amp={mode}, CUDA without bf16")
    if device.type != "cpu":
        return Precision(False, torch.float32, False, f"train.amp={mode}: fp32 on {device.type}")
    if mode == "cuda":
        return Precision(False, torch.float32, False, "train.amp=cuda: fp32 on CPU")
    flag = cpu_bf16_support(cpuinfo)
    if flag:
        return Precision(True, torch.bfloat16, False, f"train.amp={mode}, CPU has {flag}")
    if mode == "on":
        return Precision(
            True, torch.bfloat16, False, "train.amp=on: bf16 emulated (no AMX/AVX512-BF16)"
        )
    return Precision(False, torch.float32, False, "train.amp=auto: no AMX/AVX512-BF16, fp32")
