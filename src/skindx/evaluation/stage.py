"""The evaluate stage: the best checkpoint on the test split -> paths.metrics (with
lesion-grouped bootstrap intervals), paths.temperature, paths.plots_dir (CSV for DVC, PNG for
people, and predictions.csv: every test image's probabilities for promote's paired test), all
logged into the pipeline's MLflow run (run.json in paths.train_dir)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skindx import tracking
from skindx.config import ProjectPaths
from skindx.data.processed import load_split
from skindx.evaluation.bootstrap import (
    BOOTSTRAP_DEFAULTS,
    CI_HIGH,
    CI_LOW,
    INTERVAL_METRICS,
    intervals_from_settings,
    paired_difference_from_settings,
)
from skindx.evaluation.calibration import calibrate
from skindx.evaluation.metrics import classification_report, softmax
from skindx.evaluation.plots import save_figures, write_plot_data
from skindx.evaluation.predictions import PREDICTIONS_FILE, read_split_table, write_predictions
from skindx.evaluation.selective import uncertainty_report
from skindx.inference.metrics import (
    HEADLINE_METRICS,
    PER_CLASS_SCORES,
    PRIMARY_METRIC,
    QUALITY_METRICS,
)
from skindx.inference.preprocessing import PreprocessingContract
from skindx.inference.tta import DIHEDRAL_VIEWS, dihedral_view
from skindx.models.checkpoint import BEST, load_model_from_checkpoint
from skindx.models.predict import predict_logits
from skindx.runtime import select_device

log = logging.getLogger(__name__)


def _clean(value: Any) -> Any:
    """NaN/inf -> None so that metrics.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def add_intervals(
    metrics: dict[str, Any],
    labels,
    predicted,
    classes: list[str],
    lesion_ids: list[str],
    settings: dict[str, Any],
) -> dict[str, Any]:
    """`<metric>_ci_low/_ci_high` beside balanced accuracy, macro-F1 and melanoma sensitivity,
    `recall_ci_low/_ci_high` in each per_class entry, and a `bootstrap` section saying how:
    lesions resampled with replacement (skindx.evaluation.bootstrap)."""
    settings = {**BOOTSTRAP_DEFAULTS, **(settings or {})}
    intervals = intervals_from_settings(
        labels, predicted, classes, groups=lesion_ids, settings=settings
    )
    out = dict(metrics)
    for name in INTERVAL_METRICS:
        out[f"{name}{CI_LOW}"], out[f"{name}{CI_HIGH}"] = (
            intervals[name].low,
            intervals[name].high,
        )
    out["per_class"] = {
        code: {
            **scores,
            f"recall{CI_LOW}": intervals[f"recall.{code}"].low,
            f"recall{CI_HIGH}": intervals[f"recall.{code}"].high,
        }
        for code, scores in metrics["per_class"].items()
    }
    out["bootstrap"] = {
        "method": "percentile, lesions resampled with replacement",
        "confidence": float(settings["confidence"]),
        "n_resamples": int(settings["n_resamples"]),
        "seed": int(settings["seed"]),
        "n_lesions": len(set(lesion_ids)),
    }
    return out


def mean_view_probabilities(view_logits, temperature: float):
    """The calibrated probabilities averaged over the views, as skindx.inference.tta averages
    them in serving. `view_logits`: one (N, C) array per view."""
    return sum(softmax(logits, temperature) for logits in view_logits) / len(view_logits)


def tta_section(
    probs,
    plain_calibrated,
    labels,
    classes: list[str],
    lesion_ids: list[str],
    bootstrap: dict[str, Any] | None,
) -> dict[str, Any]:
    """metrics.json's `tta`: the test split scored as serving scores it with TTA on
    (`probs`: calibrated probabilities averaged over the 8 dihedral views,
    mean_view_probabilities), its quality metrics, and the lesion-grouped paired bootstrap of
    its balanced accuracy against the plain pass (the same test promote uses)."""
    report = classification_report(labels, probs, classes)
    diff = paired_difference_from_settings(
        labels,
        probs.argmax(axis=1),
        plain_calibrated.argmax(axis=1),
        classes,
        groups=lesion_ids,
        settings=bootstrap,
        metric=PRIMARY_METRIC,
    )
    return {
        "views": DIHEDRAL_VIEWS,
        **{k: report[k] for k in QUALITY_METRICS},
        "difference": diff.to_dict(),
        "per_class_recall": {code: report["per_class"][code]["recall"] for code in classes},
    }


def evaluate_checkpoint(
    checkpoint_path: Path,
    processed_dir: Path,
    *,
    batch_size: int = 64,
    ece_bins: int = 15,
    bootstrap: dict[str, Any] | None = None,
    uncertain: dict[str, Any] | None = None,
    tta: bool = False,
) -> dict[str, Any]:
    """Everything evaluate computes, as arrays and dicts (no files written). `bootstrap`:
    evaluate.bootstrap (n_resamples, confidence, seed); `uncertain`: evaluate.uncertain
    (target_accuracy, min_coverage) for the confidence threshold chosen on validation; `tta`:
    also score the 8 dihedral views of every test image (8x the test inference) and report
    the gain in metrics["tta"], with its own uncertainty threshold chosen on the validation
    views (averaged probabilities are less peaked, so the plain threshold would mark more of
    them uncertain than intended). The headline metrics stay those of the plain pass, which is
    what serving answers by default."""
    model, checkpoint = load_model_from_checkpoint(checkpoint_path)
    config = checkpoint["config"]
    contract = PreprocessingContract.from_dict(config["contract"])
    classes = list(config["classes"])
    device = select_device("auto")
    # the memory format training validated in (train.channels_last, on by default): the same
    # validation logits that chose best.pt, and on a CPU the faster kernels (oneDNN's NHWC
    # convolutions), which matters most for the 8 views of evaluate.tta
    channels_last = bool(config.get("train", {}).get("channels_last", False))
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)

    def score(images):
        return predict_logits(
            model, images, contract, batch_size, device=device, channels_last=channels_last
        )

    val, test = load_split(processed_dir, "val"), load_split(processed_dir, "test")
    val_logits, test_logits = score(val.images), score(test.images)
    calibration = calibrate(val_logits, val.labels, test_logits, test.labels, ece_bins)
    probs = softmax(test_logits)
    calibrated = softmax(test_logits, calibration.temperature)
    report = classification_report(test.labels, probs, classes, ece_bins=ece_bins)
    metrics = {
        **{k: report[k] for k in QUALITY_METRICS},
        "ece_before": calibration.ece_before,
        "ece_after": calibration.ece_after,
        "temperature": calibration.temperature,
        "nll_before": calibration.nll_before,
        "nll_after": calibration.nll_after,
        "n_test": report["n_samples"],
        "best_epoch": int(checkpoint.get("best_epoch", checkpoint.get("epoch", 0))),
        "per_class": report["per_class"],
    }
    metrics["selective"] = uncertainty_report(
        softmax(val_logits, calibration.temperature),
        val.labels,
        calibrated,
        test.labels,
        **{"target_accuracy": 0.8, "min_coverage": 0.1, **(uncertain or {})},
    )
    table = read_split_table(processed_dir, "test")
    if [int(row["label"]) for row in table] != test.labels.tolist():
        raise ValueError(
            f"{processed_dir}/splits/test.csv does not list the test arrays' images in order; "
            "rerun the preprocess stage (dvc repro preprocess)"
        )
    lesion_ids = [row["lesion_id"] for row in table]
    metrics = add_intervals(
        metrics, test.labels, probs.argmax(axis=1), classes, lesion_ids, bootstrap or {}
    )
    if tta:

        def views(images, plain_logits):
            images = np.asarray(images)
            return [plain_logits] + [
                score(np.ascontiguousarray(dihedral_view(images, index)))
                for index in range(1, DIHEDRAL_VIEWS)
            ]

        test_tta = mean_view_probabilities(views(test.images, test_logits), calibration.temperature)
        metrics["tta"] = tta_section(
            test_tta,
            calibrated,
            test.labels,
            classes,
            lesion_ids,
            bootstrap,
        )
        metrics["tta"]["selective"] = uncertainty_report(
            mean_view_probabilities(views(val.images, val_logits), calibration.temperature),
            val.labels,
            test_tta,
            test.labels,
            **{"target_accuracy": 0.8, "min_coverage": 0.1, **(uncertain or {})},
        )
    return {
        "metrics": metrics,
        "calibration": calibration,
        "classes": classes,
        "labels": test.labels,
        "probs": probs,
        "calibrated_probs": calibrated,
        "confusion_matrix": report["confusion_matrix"],
        "image_ids": [row["image_id"] for row in table],
        "lesion_ids": lesion_ids,
    }


def run_evaluate(params: dict[str, Any], *, paths: ProjectPaths | None = None) -> dict[str, Any]:
    """`params`: the evaluate and mlflow sections plus paths (`paths` overrides the latter)."""
    paths = paths or ProjectPaths.from_params(params)
    cfg = params["evaluate"]
    bins = int(cfg.get("ece_bins", 15))
    result = evaluate_checkpoint(
        paths.train_dir / BEST,
        paths.processed_dir,
        batch_size=int(cfg.get("batch_size", 64)),
        ece_bins=bins,
        bootstrap=cfg.get("bootstrap"),
        uncertain=cfg.get("uncertain"),
        tta=bool(cfg.get("tta", False)),
    )
    metrics, cal = _clean(result["metrics"]), result["calibration"]

    metrics_path = paths.metrics
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    temperature_path = paths.temperature
    temperature_path.parent.mkdir(parents=True, exist_ok=True)
    temperature_path.write_text(
        json.dumps(
            _clean(
                {
                    "temperature": cal.temperature,
                    "ece_before": cal.ece_before,
                    "ece_after": cal.ece_after,
                    "ece_bins": bins,
                }
            ),
            indent=2,
        )
        + "\n"
    )
    plots_dir = paths.plots_dir
    write_plot_data(
        plots_dir,
        result["labels"],
        result["probs"],
        result["calibrated_probs"],
        result["classes"],
        bins,
    )
    predictions_path = write_predictions(
        plots_dir / PREDICTIONS_FILE,
        image_ids=result["image_ids"],
        lesion_ids=result["lesion_ids"],
        labels=result["labels"],
        probs=result["calibrated_probs"],
        classes=result["classes"],
    )
    figures = save_figures(
        plots_dir / "images",
        result["labels"],
        result["probs"],
        result["calibrated_probs"],
        result["classes"],
        temperature=cal.temperature,
        ece_before=cal.ece_before,
        ece_after=cal.ece_after,
        n_bins=bins,
    )
    run_file = tracking.run_file(paths.train_dir)
    _log_to_mlflow(
        params, metrics, [metrics_path, temperature_path, predictions_path], figures, run_file
    )
    return metrics


def _log_to_mlflow(params, metrics, files, figures, run_file: Path) -> None:
    mlflow = tracking.configure(params.get("mlflow"))
    run_id = tracking.pipeline_run_id(run_file)
    headline = (
        *HEADLINE_METRICS,
        *(f"{name}{suffix}" for name in INTERVAL_METRICS for suffix in (CI_LOW, CI_HIGH)),
    )
    flat = {f"test_{k}": float(metrics[k]) for k in headline if metrics.get(k) is not None}
    for key in ("threshold", "coverage", "accuracy"):
        if (metrics.get("selective") or {}).get(key) is not None:
            flat[f"test_selective_{key}"] = float(metrics["selective"][key])
    for code, scores in metrics["per_class"].items():
        for name in (*PER_CLASS_SCORES, f"recall{CI_LOW}", f"recall{CI_HIGH}"):
            if scores.get(name) is not None:
                flat[f"test_{name}_{code}"] = float(scores[name])
    tta = metrics.get("tta") or {}
    for key in QUALITY_METRICS:  # test_tta_<metric>, and the paired gain in balanced accuracy
        if tta.get(key) is not None:
            flat[f"test_tta_{key}"] = float(tta[key])
    if (tta.get("difference") or {}).get("delta") is not None:
        flat["test_tta_balanced_accuracy_delta"] = float(tta["difference"]["delta"])
    start: dict[str, Any] = {"run_id": run_id} if run_id else {"run_name": "evaluate"}
    if not run_id:
        log.warning("no MLflow run id in %s: logging evaluate to a new run", run_file)
    with mlflow.start_run(**start):
        mlflow.log_metrics(flat)
        mlflow.set_tag("evaluated", "true")
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
        for path in figures:
            mlflow.log_artifact(str(path), artifact_path="evaluation/figures")
