"""The torch-free core of SkinDX (numpy, Pillow, ONNX Runtime; never torch).

The name is historical: besides what serving needs to run a model (the verified ONNX package
loader, Grad-CAM, upload decoding), this is where every definition shared by the data,
training, evaluation, export and serving code lives once: the class list (`classes`), the
preprocessing contract (`preprocessing`), the metric names (`metrics`), content hashes
(`hashing`) and the CPU thread count (`resources`). Serving and its image import only this
package of skindx, so it must never import torch (tests/inference checks it).
"""

from skindx.inference.cam import cam_for_class, overlay
from skindx.inference.classes import CLASS_CODES, CLASS_INFO, ClassInfo
from skindx.inference.hashing import sha256_file
from skindx.inference.metrics import HEADLINE_METRICS, HIGHER_IS_BETTER, METRIC_LABELS
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
from skindx.inference.resources import cpu_threads

__all__ = [
    "CLASS_CODES",
    "CLASS_INFO",
    "ClassInfo",
    "HEADLINE_METRICS",
    "HIGHER_IS_BETTER",
    "METRIC_LABELS",
    "ModelIntegrityError",
    "PackagedModel",
    "PreprocessingContract",
    "cam_for_class",
    "cpu_threads",
    "load_packaged_model",
    "normalize",
    "overlay",
    "preprocess",
    "resize_to_contract",
    "sha256_file",
    "verify_package",
]
