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
    run_export(
        FeatureModel(model).eval(),
        path,
        input_size,
        opset,
        (INPUT_NAME,),
        EXPORTED_OUTPUTS,
        dynamo=dynamo,
        what="torch.onnx.export",
    )
    check_onnx(path, opset)
    return path


def run_export(
    wrapper: nn.Module,
    path: Path,
    input_size: int,
    opset: int,
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    *,
    dynamo: bool = False,
    what: str,
) -> None:
    """torch.onnx.export of `wrapper` on a (2, 3, S, S) example with a dynamic batch axis, by the
    TorchScript exporter or (dynamo) the torch.export one; any exporter failure -> ExportError
    naming `what`."""
    example = torch.zeros(2, 3, input_size, input_size)
    if dynamo:  # one input, named x in forward()
        shapes = {"dynamic_shapes": {"x": {0: torch.export.Dim("batch")}}, "external_data": False}
    else:
        shapes = {"dynamic_axes": {name: {0: "batch"} for name in (*inputs, *outputs)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        try:
            torch.onnx.export(
                wrapper,
                (example,),
                str(path),
                opset_version=opset,
                dynamo=dynamo,
                input_names=list(inputs),
                output_names=list(outputs),
                **shapes,
            )
        except Exception as exc:  # exporter failures come in many types
            raise ExportError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


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


# --- Grad-CAM on layer3: a second, small graph, run only for /explain --------------------------
CAM_INPUT_NAME = "input"
CAM_OUTPUT_NAMES = ("activations", "weights")


def _bn_scale(norm: nn.BatchNorm2d) -> torch.Tensor:
    """d BN(z) / dz in eval mode, per channel, as [1, K, 1, 1]."""
    return (norm.weight / torch.sqrt(norm.running_var + norm.eps)).view(1, -1, 1, 1)


def _conv_input_grad(grad: torch.Tensor, conv: nn.Conv2d, shape: torch.Size) -> torch.Tensor:
    """The gradient w.r.t. a convolution's input (its transposed convolution), sized `shape`."""
    padding = []
    for axis in (0, 1):
        produced = (
            (grad.shape[2 + axis] - 1) * conv.stride[axis]
            - 2 * conv.padding[axis]
            + conv.dilation[axis] * (conv.kernel_size[axis] - 1)
            + 1
        )
        padding.append(int(shape[2 + axis]) - int(produced))
    return nn.functional.conv_transpose2d(
        grad,
        conv.weight,
        stride=conv.stride,
        padding=conv.padding,
        output_padding=tuple(padding),
        groups=conv.groups,
        dilation=conv.dilation,
    )


class Layer3GradCam(nn.Module):
    """forward(x) -> (layer3 activations A [N, K3, h, w], Grad-CAM weights [N, C, K3]).

    The weights are Grad-CAM's alpha_ck = mean_ij d logit_c / d A_kij for every class c. ONNX has
    no autograd, so layer4's backward pass is written out with the forward ops' own transposes:
    transposed convolutions with the same weights, eval-mode BatchNorm scales and the ReLU masks
    of the forward pass (exact for ReLU networks: tests/inference/test_cam.py checks it against
    torch.autograd and pytorch-grad-cam). Then CAM_c = ReLU(sum_k alpha_ck A_k) in numpy."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        FeatureModel(model)  # the same ResNet check
        self.model = model
        head = model.fc
        linear = head[-1] if isinstance(head, nn.Sequential) else head
        self.register_buffer("head_weight", linear.weight.detach().clone())

    def layer3(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer3(m.layer2(m.layer1(x)))

    @staticmethod
    def _block_forward(block: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        cache = {"x": x}
        out = block.relu(block.bn1(block.conv1(x)))
        cache["o1"] = out
        if hasattr(block, "conv3"):  # Bottleneck
            out = block.relu(block.bn2(block.conv2(out)))
            cache["o2"] = out
            out = block.bn3(block.conv3(out))
        else:  # BasicBlock
            out = block.bn2(block.conv2(out))
        identity = block.downsample(x) if block.downsample is not None else x
        cache["out"] = block.relu(out + identity)
        return cache

    @staticmethod
    def _block_backward(block: nn.Module, cache, grad: torch.Tensor, classes: int):
        def rep(t: torch.Tensor) -> torch.Tensor:  # [N, ...] -> [N * C, ...], class-major
            return t.unsqueeze(1).expand(-1, classes, -1, -1, -1).reshape(-1, *t.shape[1:])

        x_shape = cache["x"].shape
        grad = grad * rep((cache["out"] > 0).to(grad.dtype))
        if hasattr(block, "conv3"):
            g = _conv_input_grad(grad * _bn_scale(block.bn3), block.conv3, cache["o2"].shape)
            g = g * rep((cache["o2"] > 0).to(g.dtype))
            g = _conv_input_grad(g * _bn_scale(block.bn2), block.conv2, cache["o1"].shape)
        else:
            g = _conv_input_grad(grad * _bn_scale(block.bn2), block.conv2, cache["o1"].shape)
        g = g * rep((cache["o1"] > 0).to(g.dtype))
        g = _conv_input_grad(g * _bn_scale(block.bn1), block.conv1, x_shape)
        if block.downsample is not None:
            conv, norm = block.downsample[0], block.downsample[1]
            g = g + _conv_input_grad(grad * _bn_scale(norm), conv, x_shape)
        else:
            g = g + grad
        return g

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        activations = self.layer3(x)
        caches, out = [], activations
        for block in self.model.layer4:
            cache = self._block_forward(block, out)
            caches.append(cache)
            out = cache["out"]
        classes, channels = self.head_weight.shape
        n, _, h, w = out.shape
        # d logit_c / d layer4 = W[c] / (h w) at every position (global average pool, linear)
        grad = (self.head_weight / (h * w)).view(1, classes, channels, 1, 1)
        grad = grad.expand(n, classes, channels, h, w).reshape(n * classes, channels, h, w)
        for block, cache in zip(reversed(list(self.model.layer4)), reversed(caches), strict=True):
            grad = self._block_backward(block, cache, grad, classes)
        weights = grad.mean(dim=(2, 3)).reshape(n, classes, -1)
        return activations, weights


def export_cam_onnx(model: nn.Module, path: str | Path, input_size: int, opset: int = MIN_OPSET):
    """Export Layer3GradCam(model) to one self-contained .onnx file (dynamic batch)."""
    path = Path(path)
    run_export(
        Layer3GradCam(model).eval(),
        path,
        input_size,
        opset,
        (CAM_INPUT_NAME,),
        CAM_OUTPUT_NAMES,
        what="Grad-CAM export",
    )
    return path


def cam_grid(model: nn.Module, input_size: int) -> dict[str, tuple[int, int]]:
    """{stage: (h, w)} of layer3 and layer4 at `input_size`."""
    with torch.no_grad():
        stages = FeatureModel(model.eval()).stages(torch.zeros(1, 3, input_size, input_size))
    return {name: tuple(t.shape[2:]) for name, t in zip(STAGES, stages, strict=True)}
