"""Model construction (torchvision ResNets with the SkinDX head) and where weights come from.

The names below load skindx.models.factory (and torch) on first use (PEP 562), so that the
torch-free `skindx.models.weights` (the pretrain stage's manifest) can be imported by the
pretrain stage when it is off, which then costs a fraction of a second instead of a torch import.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the static import graph (tests/test_structure.py) still sees these
    from skindx.models.factory import (
        ARCHS,
        ModelWeightsError,
        build_model,
        load_backbone,
        read_state_dict,
    )

__all__ = ["ARCHS", "ModelWeightsError", "build_model", "load_backbone", "read_state_dict"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("skindx.models.factory"), name)
    raise AttributeError(f"module 'skindx.models' has no attribute {name!r}")
