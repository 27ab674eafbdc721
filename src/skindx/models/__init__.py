"""Model construction (torchvision ResNets with the SkinDX head)."""

from skindx.models.factory import (
    ARCHS,
    ModelWeightsError,
    build_model,
    load_backbone,
    read_state_dict,
)

__all__ = ["ARCHS", "ModelWeightsError", "build_model", "load_backbone", "read_state_dict"]
