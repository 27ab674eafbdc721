"""Torch vs ONNX Runtime parity on real images, both through the shared preprocessing.

The torch side is the evaluate stage's own path (skindx.models.predict.predict_logits);
the ONNX side is what serving runs. Probabilities (temperature-scaled, as served) must agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import nn

from skindx.inference.model import INPUT_NAME, OUTPUT_NAMES, create_session, softmax
from skindx.inference.preprocessing import PreprocessingContract, normalize
from skindx.models.predict import predict_logits

DEFAULT_TOLERANCE = 1e-4


class ParityError(RuntimeError):
    """The exported ONNX model does not reproduce the torch model's probabilities."""


@dataclass(frozen=True)
class ParityReport:
    n_images: int
    max_abs_diff: float
    tolerance: float
    worst_image: int
    argmax_agreement: float

    def to_dict(self) -> dict:
        return asdict(self)


def onnx_logits(
    onnx_path: str | Path, images: np.ndarray, contract: PreprocessingContract, batch_size: int = 32
) -> np.ndarray:
    session = create_session(onnx_path)
    chunks = [
        session.run(
            [OUTPUT_NAMES[0]],
            {INPUT_NAME: normalize(np.asarray(images[i : i + batch_size]), contract)},
        )[0]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(chunks).astype(np.float32)


def check_parity(
    model: nn.Module,
    onnx_path: str | Path,
    images: np.ndarray,
    contract: PreprocessingContract,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    temperature: float = 1.0,
    batch_size: int = 32,
) -> ParityReport:
    """Raise ParityError if torch and ONNX probabilities differ by more than `tolerance`."""
    size = contract.input_size
    if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
        raise ParityError(
            f"parity images must be uint8 (N, {size}, {size}, 3) as stored by preprocess, got "
            f"{images.dtype} {images.shape}"
        )
    if len(images) == 0:
        raise ParityError("no images to check parity on")
    torch_probs = softmax(predict_logits(model, images, contract, batch_size), temperature)
    onnx_probs = softmax(onnx_logits(onnx_path, images, contract, batch_size), temperature)
    diff = np.abs(torch_probs.astype(np.float64) - onnx_probs)
    per_image = np.nan_to_num(diff, nan=np.inf).max(axis=1)
    worst = int(per_image.argmax())
    report = ParityReport(
        n_images=len(images),
        max_abs_diff=float(per_image[worst]),
        tolerance=float(tolerance),
        worst_image=worst,
        argmax_agreement=float((torch_probs.argmax(1) == onnx_probs.argmax(1)).mean()),
    )
    if not report.max_abs_diff <= tolerance:
        raise ParityError(
            f"ONNX export does not match torch: max |p_torch - p_onnx| = {report.max_abs_diff:.3g} "
            f"> tolerance {tolerance:g} on {report.n_images} images (worst: image {worst}; "
            f"top-1 agreement {report.argmax_agreement:.0%}). The exported graph computes "
            "something else than the model (preprocessing baked in twice, wrong weights or an "
            "unsupported op); the package was not written."
        )
    return report
