"""Torch-free inference: the preprocessing contract, class information and (package issue)
the verified ONNX model loader. Imported by serving; must never import torch."""

from skindx.inference.cam import cam_for_class, overlay
from skindx.inference.classes import CLASS_CODES, CLASS_INFO, ClassInfo
from skindx.inference.model import (
    ModelIntegrityError,
    PackagedModel,
    load_packaged_model,
    verify_package,
)
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
    "ModelIntegrityError",
    "PackagedModel",
    "PreprocessingContract",
    "cam_for_class",
    "load_packaged_model",
    "normalize",
    "overlay",
    "preprocess",
    "resize_to_contract",
    "verify_package",
]
