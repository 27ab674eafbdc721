"""The package stage: best.pt in paths.train_dir -> the servable package in
paths.candidate_dir (ONNX + safetensors + CAM head + model card), checked for torch/ONNX parity
on real test images. pipelines/package.py then registers it (skindx.registry, which itself
builds on skindx.export: registering here would make the two import each other)."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skindx import tracking
from skindx.config import ProjectPaths, load_params
from skindx.data.feedback import feedback_lineage
from skindx.data.ingest import MANIFEST_FILE, read_manifest
from skindx.data.processed import load_split, split_images_path
from skindx.evaluation.predictions import PREDICTIONS_FILE, read_split_table
from skindx.export.atomic import replace_directory
from skindx.export.ood import OodFitData
from skindx.export.package import build_package, write_report
from skindx.export.quantize import (
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_MAX_BMA_DROP,
    QuantizationRefused,
    quantize_package,
)
from skindx.inference.classes import CLASS_CODES
from skindx.inference.hashing import sha256_file
from skindx.inference.preprocessing import PreprocessingContract
from skindx.models.checkpoint import BEST, load_model_from_checkpoint
from skindx.monitor.reference import REFERENCE_FILE, write_reference


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


def predictions_file(paths: ProjectPaths) -> Path:
    """evaluate's per-image test predictions, packaged for promote's paired test."""
    path = paths.plots_dir / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the evaluate stage first (dvc repro)")
    return path


def reference_file(paths: ProjectPaths, out_dir: Path) -> Path:
    """The drift monitor's reference (skindx.monitor.reference): image statistics of every test
    image, as the model saw it, written into `out_dir`."""
    images_path = split_images_path(paths.processed_dir, "test")
    if not images_path.is_file():
        raise FileNotFoundError(f"{images_path} not found: run the preprocess stage first")
    rows = read_split_table(paths.processed_dir, "test")
    images = np.load(images_path, mmap_mode="r")
    return write_reference(out_dir / REFERENCE_FILE, [r["image_id"] for r in rows], images)


def ood_fit_data(paths: ProjectPaths, cfg: dict[str, Any]) -> OodFitData:
    """The images the out-of-distribution scorer is fitted (train), thresholded (val) and
    tested (test) on, as preprocess stored them; at most `ood.max_fit_images` training images
    (evenly spread), since the covariance needs no more."""
    train = load_split(paths.processed_dir, "train")
    limit = int((cfg.get("ood") or {}).get("max_fit_images") or len(train))
    picks = np.unique(np.linspace(0, len(train) - 1, num=min(limit, len(train))).astype(int))
    return OodFitData(
        train_images=np.ascontiguousarray(train.images[picks]),
        train_labels=np.asarray(train.labels[picks]),
        val_images=load_split(paths.processed_dir, "val").images,
        test_images=load_split(paths.processed_dir, "test").images,
        pass_rate=float((cfg.get("ood") or {}).get("pass_rate", 0.95)),
    )


log = logging.getLogger(__name__)


def report_path(params: dict[str, Any], paths: ProjectPaths, key: str, default: str) -> Path:
    """paths.<key> (one of the package stage's DVC metrics), else `default` beside
    paths.metrics (params files composed before the key existed)."""
    return Path((params.get("paths") or {}).get(key) or paths.metrics.with_name(default))


def ood_report_path(params: dict[str, Any], paths: ProjectPaths) -> Path:
    """paths.ood_report: the out-of-distribution scorer's AUROC and test rejection."""
    return report_path(params, paths, "ood_report", "ood.json")


def apply_int8(params: dict[str, Any], paths: ProjectPaths, out_dir: Path) -> dict[str, Any]:
    """package.int8: replace the fp32 package in `out_dir` by its INT8 quantization
    (skindx.export.quantize) when that keeps test balanced accuracy within
    int8.max_bma_drop; otherwise keep the fp32 package and say why. Either way the decision
    and its measurements go to paths.quantization_report (a DVC metric), so `dvc metrics show`
    tells which graph a candidate serves."""
    cfg = params["package"].get("int8") or {}
    if not cfg.get("enabled", False):
        result: dict[str, Any] = {"enabled": False, "served": "fp32"}
    else:
        staged = out_dir.with_name(f".{out_dir.name}.int8")
        shutil.rmtree(staged, ignore_errors=True)
        try:
            report = quantize_package(
                out_dir,
                paths.processed_dir,
                staged,
                max_bma_drop=float(cfg.get("max_bma_drop", DEFAULT_MAX_BMA_DROP)),
                calibration_images=int(cfg.get("calibration_images", DEFAULT_CALIBRATION_IMAGES)),
                ood_report=ood_report_path(params, paths),
            )
        except QuantizationRefused as refused:
            log.warning("package: int8 refused, the candidate stays fp32: %s", refused)
            result = {"enabled": True, "served": "fp32", "refused": str(refused), **refused.report}
        else:
            replace_directory(staged, out_dir)
            result = {"enabled": True, "served": "int8", **report}
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    write_report(report_path(params, paths, "quantization_report", "quantization.json"), result)
    return result


def checkpoint_contract(checkpoint: dict[str, Any], path: Path) -> PreprocessingContract:
    """The preprocessing the model was trained with (not today's params.yaml), after checking
    that its classes are the ones the package and serving code assume."""
    config = checkpoint["config"]
    if list(config["classes"]) != list(CLASS_CODES):
        raise ValueError(
            f"{path} was trained on classes {list(config['classes'])}, but packages "
            f"serve {list(CLASS_CODES)}; retrain (dvc repro train)"
        )
    return PreprocessingContract.from_dict(config["contract"])


@dataclass(frozen=True)
class PackageResult:
    out_dir: Path
    card: dict[str, Any]
    run_id: str | None  # the pipeline's MLflow run (run.json), for the registration
    run_tags: dict[str, str]  # lineage tags for the registration's run
    quantization: dict[str, Any]  # package.int8's decision (paths.quantization_report)


def run_package(
    params: dict[str, Any],
    *,
    paths: ProjectPaths | None = None,
    params_file: str | Path = "params.yaml",
) -> PackageResult:
    """`params`: the package section plus profile and paths (`paths` overrides the latter)."""
    paths = paths or ProjectPaths.from_params(params)
    cfg = params["package"]
    checkpoint_path = paths.train_dir / BEST
    model, checkpoint = load_model_from_checkpoint(checkpoint_path)
    contract = checkpoint_contract(checkpoint, checkpoint_path)
    manifest = paths.raw_dir / MANIFEST_FILE
    lineage = {
        "git_commit": tracking.git_commit(),
        "mlflow_run_id": tracking.pipeline_run_id(tracking.run_file(paths.train_dir)),
        "data_hash": tracking.data_hash(manifest),
        # reviewed cases from the prediction log in the training split, and their window
        "feedback": feedback_lineage(read_manifest(paths.raw_dir)),
        "params": load_params(params_file),
        # the pretrain stage's run when the backbone came from it (skindx.models.weights)
        "pretrain": checkpoint["config"].get("pretrain"),
        "checkpoint": {
            "path": str(checkpoint_path),
            "sha256": sha256_file(checkpoint_path),
            "epoch": checkpoint.get("best_epoch", checkpoint.get("epoch")),
            "best_metric": checkpoint.get("best_metric"),
            # "model" (the trained weights) or "ema" (their moving average, train.ema)
            "weights": checkpoint.get("weights", "model"),
        },
    }
    with tempfile.TemporaryDirectory(prefix="skindx-package-") as scratch:
        reference = reference_file(paths, Path(scratch))
        out_dir = build_package(
            model,
            contract,
            paths.candidate_dir,
            temperature=float(read_json(paths.temperature, "evaluate")["temperature"]),
            metrics=read_json(paths.metrics, "evaluate"),
            lineage=lineage,
            parity_images=parity_sample(
                split_images_path(paths.processed_dir, "test"), int(cfg["parity_images"])
            ),
            opset=int(cfg["opset"]),
            parity_tolerance=float(cfg["parity_tolerance"]),
            name=cfg["registered_model"],
            extra_files=[predictions_file(paths), reference],
            ood=ood_fit_data(paths, cfg) if (cfg.get("ood") or {}).get("enabled", True) else None,
            ood_report=ood_report_path(params, paths),
            cam_min_grid=int(cfg.get("cam_min_grid", 4)),
        )
    quantization = apply_int8(params, paths, out_dir)
    return PackageResult(
        out_dir=out_dir,
        quantization=quantization,
        card=json.loads((out_dir / "model.json").read_text()),
        run_id=lineage["mlflow_run_id"],
        run_tags=tracking.lineage_tags("package", params.get("profile"), manifest=manifest),
    )
