"""Torch-free inference: the preprocessing contract, class information and (package issue)
the verified ONNX model loader. Imported by serving; must never import torch."""

from skindx.inference.classes import CLASS_CODES, CLASS_INFO, ClassInfo
from skindx.inference.preprocessing import (
    PreprocessingContract,
    normalize,
    preprocess,
    resize_to_contract,
)

__all__ = [
    "CLASS_CODES",
    "CLASS_INFO",
    "ClassInfo",
    "PreprocessingContract",
    "normalize",
    "preprocess",
    "resize_to_contract",
]
