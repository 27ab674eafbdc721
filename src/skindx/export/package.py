"""Build a servable package from a torch model: ONNX (logits + layer4 features), safetensors
weights, the CAM head for numpy Grad-CAM, and the model card with every file's sha256.

The package is written to a staging directory beside `out_dir` and moved into place only
once it is complete, verified and (when images are given) passes the parity check.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skindx.export.atomic import replace_directory, staging_dir
from skindx.export.card import build_card, default_version, file_hashes, write_card
from skindx.export.onnx import (
    MIN_OPSET,
    cam_grid,
    export_cam_onnx,
    export_onnx,
    onnx_opset,
    stage_channels,
)
from skindx.export.ood import OodFitData, fit_and_report, summary
from skindx.export.parity import DEFAULT_TOLERANCE, check_parity
from skindx.inference.model import (
    CAM_HEAD_FILE,
    CAM_ONNX_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    verify_package,
)
from skindx.inference.preprocessing import PreprocessingContract

DEFAULT_CAM_MIN_GRID = 4  # layer4 coarser than this (e.g. 2x2 at 64 px): Grad-CAM on layer3

# (block type, blocks per stage) -> torchvision name, to record what was packaged.
_RESNETS = {
    ("BasicBlock", (2, 2, 2, 2)): "resnet18",
    ("BasicBlock", (3, 4, 6, 3)): "resnet34",
    ("Bottleneck", (3, 4, 6, 3)): "resnet50",
    ("Bottleneck", (3, 4, 23, 3)): "resnet101",
}


def classifier(model: nn.Module) -> nn.Linear:
    """The head's linear layer (`fc = Sequential(Dropout, Linear)` per the model contract)."""
    head = getattr(model, "fc", None)
    linear = head[-1] if isinstance(head, nn.Sequential) else head
    if not isinstance(linear, nn.Linear):
        raise TypeError("expected a build_model ResNet whose fc ends in an nn.Linear")
    return linear


def describe_architecture(model: nn.Module) -> dict[str, Any]:
    linear = classifier(model)
    stages = tuple(len(getattr(model, f"layer{i}")) for i in range(1, 5))
    block = type(model.layer1[0]).__name__
    return {
        "arch": _RESNETS.get((block, stages), f"resnet({block}, {list(stages)})"),
        "num_classes": linear.out_features,
        "feature_channels": linear.in_features,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def cam_head(model: nn.Module) -> np.ndarray:
    """[C, K+1] float32: the fc weight with the bias appended as the last column."""
    linear = classifier(model)
    weight = linear.weight.detach().cpu().float().numpy()
    bias = (
        linear.bias.detach().cpu().float().numpy() if linear.bias is not None else 0 * weight[:, 0]
    )
    return np.concatenate([weight, bias[:, None]], axis=1).astype(np.float32)


def save_weights(model: nn.Module, path: Path, architecture: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={k: str(v) for k, v in architecture.items()})


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write a JSON report atomically (a DVC metric: never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)


def build_package(
    model: nn.Module,
    contract: PreprocessingContract,
    out_dir: str | Path,
    *,
    temperature: float = 1.0,
    metrics: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    version: str | None = None,
    parity_images: np.ndarray | None = None,
    opset: int = MIN_OPSET,
    parity_tolerance: float = DEFAULT_TOLERANCE,
    name: str | None = None,
    extra_files: list[str | Path] | None = None,
    ood: OodFitData | None = None,
    ood_report: Path | None = None,
    cam_min_grid: int = DEFAULT_CAM_MIN_GRID,
) -> Path:
    """Export `model` (a build_model ResNet) into `out_dir`; returns `out_dir`.

    `extra_files` are copied into the package beside the model (e.g. evaluate's
    predictions.csv, so a champion's test predictions travel with it) and sealed by the card's
    sha256 list like every other file.

    `ood`: fit the out-of-distribution scorer (skindx.export.ood) on the exported graph's
    outputs for these images; its files join the package and its parameters the card's `ood`
    section; the full report (per-probe scores) is written to `ood_report` when given.

    Raises ParityError (and leaves `out_dir` as it was) if the ONNX model's probabilities on
    `parity_images` differ from torch's by more than `parity_tolerance`.
    """
    out_dir = Path(out_dir)
    model = model.eval().cpu()
    architecture = describe_architecture(model)
    staged = staging_dir(out_dir)
    try:
        export_onnx(model, staged / ONNX_FILE, contract.input_size, opset=opset)
        export: dict[str, Any] = {
            "opset": onnx_opset(staged / ONNX_FILE),
            "exporter": "torch.onnx (TorchScript)",
            "torch_version": torch.__version__,
        }
        if parity_images is not None:
            report = check_parity(
                model,
                staged / ONNX_FILE,
                np.asarray(parity_images),
                contract,
                tolerance=parity_tolerance,
                temperature=temperature,
            )
            export["parity"] = report.to_dict()
        save_weights(model, staged / WEIGHTS_FILE, architecture)
        np.save(staged / CAM_HEAD_FILE, cam_head(model), allow_pickle=False)
        grids = cam_grid(model, contract.input_size)
        cam = {"layer": "layer4", "grid": list(grids["layer4"])}
        if min(grids["layer4"]) < cam_min_grid:
            export_cam_onnx(model, staged / CAM_ONNX_FILE, contract.input_size, opset=opset)
            cam = {
                "layer": "layer3",
                "grid": list(grids["layer3"]),
                "graph": CAM_ONNX_FILE,
                "why": f"layer4 is {grids['layer4'][0]}x{grids['layer4'][1]} at "
                f"{contract.input_size} px (under {cam_min_grid}x{cam_min_grid}): Grad-CAM "
                "on layer3, its weights from layer4's backward pass (cam.onnx)",
            }
        for extra in extra_files or ():
            shutil.copyfile(extra, staged / Path(extra).name)
        ood_section = report = None
        if ood is not None:
            scorer, report = fit_and_report(
                staged / ONNX_FILE,
                contract,
                ood,
                stages=stage_channels(model),
                n_classes=architecture["num_classes"],
            )
            scorer.info["evaluation"] = summary(report)
            scorer.save(staged)
            ood_section = scorer.to_dict()
        card = build_card(
            name=name or f"skindx-{architecture['arch']}",
            version=version or default_version(),
            contract=contract,
            temperature=temperature,
            metrics=metrics,
            lineage=lineage,
            architecture=architecture,
            files=file_hashes(staged),
            export=export,
            ood=ood_section,
            cam=cam,
        )
        write_card(card, staged)
        for path in staged.iterdir():
            path.chmod(0o644)
        verify_package(staged)
        replaced = replace_directory(staged, out_dir)
        if ood_report is not None and report is not None:
            write_report(Path(ood_report), report)
        return replaced
    finally:
        shutil.rmtree(staged, ignore_errors=True)
