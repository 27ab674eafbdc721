"""ONNX export of a SkinDX ResNet with three outputs: the logits, layer4's feature map (for the
CAM) and `pooled`, the global average pool of every backbone stage concatenated (layer1..4, for
the out-of-distribution scorer, skindx.inference.ood).

The TorchScript exporter (dynamo=False) is the default: for a plain ResNet it writes exactly
the requested opset (17) in about a second, with a dynamic batch axis and the weights inside
the one .onnx file. The torch.export-based exporter (dynamo=True) is ~6x slower here and
cannot down-convert its graph to opset 17 (it silently stays at 18); it remains selectable.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from skindx.inference.model import EXPORTED_OUTPUTS, INPUT_NAME, STAGES

MIN_OPSET = 17


class ExportError(RuntimeError):
    """The model could not be exported to a valid, self-contained ONNX file."""


class FeatureModel(nn.Module):
    """Wraps a torchvision ResNet: forward(x) -> (logits, layer4 features [N, K, h, w],
    pooled [N, K1 + K2 + K3 + K4]: each stage's global average pool, in STAGES order)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        missing = [n for n in ("conv1", "layer4", "avgpool", "fc") if not hasattr(model, n)]
        if missing:
            raise TypeError(f"FeatureModel needs a torchvision ResNet; the model lacks {missing}")
        self.model = model

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        outputs = []
        for name in STAGES:
            x = getattr(m, name)(x)
            outputs.append(x)
        return outputs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)[-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stages = self.stages(x)
        features = stages[-1]
        logits = self.model.fc(torch.flatten(self.model.avgpool(features), 1))
        pooled = torch.cat([s.mean(dim=(2, 3)) for s in stages], dim=1)
        return logits, features, pooled


def stage_channels(model: nn.Module) -> dict[str, int]:
    """{stage: output channels} in STAGES order: how `pooled` splits (ResNet blocks end in
    bn3 (Bottleneck) or bn2 (BasicBlock))."""
    channels = {}
    for name in STAGES:
        block = getattr(model, name)[-1]
        norm = getattr(block, "bn3", None) or block.bn2
        channels[name] = int(norm.num_features)
    return channels


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: int,
    *,
    opset: int = MIN_OPSET,
    dynamo: bool = False,
) -> Path:
    """Export `model` (eval mode) wrapped in FeatureModel to one self-contained .onnx file."""
    if opset < MIN_OPSET:
        raise ExportError(f"package.opset must be at least {MIN_OPSET}, got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = FeatureModel(model).eval()
    example = torch.zeros(2, 3, input_size, input_size)
    names = {"input_names": [INPUT_NAME], "output_names": list(EXPORTED_OUTPUTS)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        try:
            if dynamo:
                batch = torch.export.Dim("batch")
                torch.onnx.export(
                    wrapper,
                    (example,),
                    str(path),
                    opset_version=opset,
                    dynamo=True,
                    dynamic_shapes={"x": {0: batch}},
                    external_data=False,
                    **names,
                )
            else:
                axes = {name: {0: "batch"} for name in (INPUT_NAME, *EXPORTED_OUTPUTS)}
                torch.onnx.export(
                    wrapper,
                    (example,),
                    str(path),
                    opset_version=opset,
                    dynamo=False,
                    dynamic_axes=axes,
                    **names,
                )
        except Exception as exc:  # exporter failures come in many types
            raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    check_onnx(path, opset)
    return path


def check_onnx(path: Path, opset: int) -> None:
    """The file is valid ONNX, self-contained, at least `opset`, with the expected interface."""
    import onnx

    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(path.name + ".")]
    model = onnx.load(str(path), load_external_data=False)
    external = [
        t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external or leftovers:
        raise ExportError(f"{path} is not self-contained: external data {external or leftovers}")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path} is not valid ONNX: {exc}") from exc
    version = _opset(model)
    if version < opset:
        raise ExportError(f"{path} has opset {version}, below the requested {opset}")
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != [INPUT_NAME] or outputs != list(EXPORTED_OUTPUTS):
        raise ExportError(
            f"{path}: inputs {inputs} / outputs {outputs}, expected "
            f"[{INPUT_NAME!r}] / {list(EXPORTED_OUTPUTS)}"
        )
    batch_dims = [
        v.type.tensor_type.shape.dim[0] for v in (*model.graph.input, *model.graph.output)
    ]
    if any(d.dim_value for d in batch_dims):
        raise ExportError(f"{path}: the batch axis is not dynamic")


def _opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def onnx_opset(path: str | Path) -> int:
    """The default-domain opset an .onnx file was written with."""
    import onnx

    return _opset(onnx.load(str(path), load_external_data=False))
