"""package stage: export models/train/best.pt into models/candidate/ (ONNX + safetensors + CAM
head + model card), check torch/ONNX parity on real test images, register it in MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from skindx import tracking
from skindx.cli import run_cli
from skindx.config import load_params, stage_params
from skindx.export.package import build_package
from skindx.inference import CLASS_CODES
from skindx.inference.model import sha256_file
from skindx.inference.preprocessing import PreprocessingContract
from skindx.registry import register_package

CHECKPOINT = Path("models/train/best.pt")
METRICS = Path("reports/metrics.json")
TEMPERATURE = Path("reports/calibration/temperature.json")
TEST_IMAGES = Path("data/processed/test_images.npy")


def read_json(path: Path, stage: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the {stage} stage first (dvc repro)")
    return json.loads(path.read_text())


def parity_sample(path: Path, count: int) -> np.ndarray:
    """`count` test images spread evenly over the split (uint8 NHWC)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the preprocess stage first (dvc repro)")
    images = np.load(path, mmap_mode="r")
    picks = np.unique(np.linspace(0, len(images) - 1, num=min(count, len(images))).astype(int))
    return np.ascontiguousarray(images[picks])


def checkpoint_contract(checkpoint: dict[str, Any]) -> PreprocessingContract:
    """The preprocessing the model was trained with (not today's params.yaml), after checking
    that its classes are the ones the package and serving code assume."""
    config = checkpoint["config"]
    if list(config["classes"]) != list(CLASS_CODES):
        raise ValueError(
            f"{CHECKPOINT} was trained on classes {list(config['classes'])}, but packages "
            f"serve {list(CLASS_CODES)}; retrain (dvc repro train)"
        )
    return PreprocessingContract.from_dict(config["contract"])


def main() -> None:
    from skindx.training.checkpoint import load_model_from_checkpoint

    params = stage_params("package", "mlflow")
    cfg = params["package"]
    model, checkpoint = load_model_from_checkpoint(CHECKPOINT)
    contract = checkpoint_contract(checkpoint)
    lineage = {
        "git_commit": tracking.git_commit(),
        "mlflow_run_id": tracking.pipeline_run_id(),
        "data_hash": tracking.data_hash(),
        "params": load_params(),
        "checkpoint": {
            "path": str(CHECKPOINT),
            "sha256": sha256_file(CHECKPOINT),
            "epoch": checkpoint.get("best_epoch", checkpoint.get("epoch")),
            "best_metric": checkpoint.get("best_metric"),
        },
    }
    out_dir = build_package(
        model,
        contract,
        cfg["out_dir"],
        temperature=float(read_json(TEMPERATURE, "evaluate")["temperature"]),
        metrics=read_json(METRICS, "evaluate"),
        lineage=lineage,
        parity_images=parity_sample(TEST_IMAGES, int(cfg["parity_images"])),
        opset=int(cfg["opset"]),
        parity_tolerance=float(cfg["parity_tolerance"]),
        name=cfg["registered_model"],
    )
    card = json.loads((out_dir / "model.json").read_text())
    parity = card["export"]["parity"]
    print(
        f"package: exported {card['architecture']['arch']} to {out_dir}/ (opset "
        f"{card['export']['opset']}); parity max |dp| = {parity['max_abs_diff']:.2e} on "
        f"{parity['n_images']} test images (tolerance {parity['tolerance']:g})"
    )
    reg = register_package(
        out_dir,
        cfg["registered_model"],
        run_id=lineage["mlflow_run_id"],
        mlflow_params=params["mlflow"],
        run_tags=tracking.lineage_tags("package", params["profile"]),
    )
    if reg is None:
        print("package: SKINDX_TRACKING=off, not registered in MLflow")
    else:
        print(f"package: registered {reg.model_uri} (MLflow run {reg.run_id})")


if __name__ == "__main__":
    run_cli(main, "package")
