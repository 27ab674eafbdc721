"""Compare a window of the prediction log with the package's reference; write the report.

Input drift: Evidently's DataDriftPreset over the image statistics (STAT_KEYS); the drift score
is its share of drifted columns (Evidently picks each column's test: K-S for small references,
normed Wasserstein above 1000 rows), an alarm when it reaches `drift_share`. Prediction drift:
Evidently's ValueDrift on the predicted class (chi-square or Jensen-Shannon). OOD rate: the share
of scored records over the card's OOD threshold, null while the log holds no OOD scores.
Performance: accuracy and balanced accuracy (BMA) of the reviewed cases, with skindx's own metric
definitions. Outputs (atomic): report.html (Evidently) and summary.json, whose `drift_score` the
API exports as the Prometheus gauge skindx_drift_score.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skindx.evaluation.metrics import accuracy, balanced_accuracy
from skindx.inference.classes import CLASS_CODES
from skindx.inference.image_stats import STAT_KEYS
from skindx.monitor.reference import load_reference
from skindx.monitor.window import Window

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class MonitorSettings:
    """conf/monitor (params.yaml's `monitor` section)."""

    reports_dir: Path = Path("reports/monitoring")
    days: float = 7.0
    drift_share: float = 0.3
    min_records: int = 30
    stattest: str | None = None  # None: Evidently's choice per column
    stattest_threshold: float | None = None

    @classmethod
    def from_params(cls, section: dict[str, Any]) -> MonitorSettings:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(section) - known
        if unknown:
            raise KeyError(f"unknown monitor settings {sorted(unknown)}; known: {sorted(known)}")
        values = dict(section)
        if "reports_dir" in values:
            values["reports_dir"] = Path(values["reports_dir"])
        return cls(**values)


@dataclass
class MonitorResult:
    summary: dict[str, Any]
    summary_path: Path
    report_path: Path | None
    notes: list[str] = field(default_factory=list)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _drift_report(current: pd.DataFrame, reference: pd.DataFrame, settings: MonitorSettings):
    """Run Evidently; returns (snapshot, input drift dict, prediction drift dict or None)."""
    from skindx.monitor._evidently import (
        DataDefinition,
        DataDriftPreset,
        Dataset,
        Report,
        ValueDrift,
    )

    with_classes = (
        "predicted_class" in reference.columns and reference["predicted_class"].notna().all()
    )
    columns = list(STAT_KEYS) + (["predicted_class"] if with_classes else [])
    definition = DataDefinition(
        numerical_columns=list(STAT_KEYS),
        categorical_columns=["predicted_class"] if with_classes else [],
    )
    metrics: list[Any] = [
        DataDriftPreset(
            columns=list(STAT_KEYS),
            drift_share=settings.drift_share,
            method=settings.stattest,
            threshold=settings.stattest_threshold,
        )
    ]
    if with_classes:
        metrics.append(ValueDrift(column="predicted_class"))
    report = Report(metrics, include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(current[columns].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference[columns].reset_index(drop=True), data_definition=definition),
    )
    result = snapshot.dict()
    share = count = None
    per_column: dict[str, dict[str, Any]] = {}
    for metric in result["metrics"]:
        config = metric["config"]
        kind = config["type"].rsplit(":", 1)[-1]
        if kind == "DriftedColumnsCount":
            share, count = float(metric["value"]["share"]), int(metric["value"]["count"])
        elif kind == "ValueDrift":
            per_column[config["column"]] = {
                "method": config.get("method"),
                "threshold": config.get("threshold"),
                "score": float(metric["value"]),
            }
    for test in result["tests"]:
        column = test["metric_config"]["params"].get("column")
        if test["id"] == "drift" and column in per_column:
            per_column[column]["drifted"] = test["status"] == "FAIL"
    if share is None:
        raise RuntimeError("Evidently's DataDriftPreset returned no DriftedColumnsCount")
    prediction = per_column.pop("predicted_class", None)
    input_drift = {
        "drift_score": share,
        "n_drifted_columns": count,
        "n_columns": len(STAT_KEYS),
        "drift_share": settings.drift_share,
        "detected": share >= settings.drift_share,
        "drifted_columns": sorted(c for c, v in per_column.items() if v.get("drifted")),
        "columns": per_column,
    }
    if prediction is not None:
        prediction = {
            **prediction,
            "detected": bool(prediction.get("drifted")),
            "current_mix": _mix(current["predicted_class"]),
            "reference_mix": _mix(reference["predicted_class"]),
        }
        prediction.pop("drifted", None)
    return snapshot, input_drift, prediction


def _mix(classes: pd.Series) -> dict[str, float]:
    counts = classes.value_counts(normalize=True)
    return {code: float(counts.get(code, 0.0)) for code in CLASS_CODES}


def ood_summary(window: pd.DataFrame, card: dict[str, Any]) -> dict[str, Any]:
    scores = pd.to_numeric(window["ood_score"], errors="coerce").dropna()
    threshold = (card.get("ood") or {}).get("threshold")
    if scores.empty:
        return {
            "rate": None,
            "n_scored": 0,
            "threshold": threshold,
            "reason": "no record in the window has an OOD score (the API logs none yet)",
        }
    if threshold is None:
        return {
            "rate": None,
            "n_scored": int(len(scores)),
            "threshold": None,
            "mean_score": float(scores.mean()),
            "reason": "the model card has no OOD threshold (card['ood']['threshold'])",
        }
    return {
        "rate": float((scores > float(threshold)).mean()),
        "n_scored": int(len(scores)),
        "threshold": float(threshold),
        "mean_score": float(scores.mean()),
    }


def performance_summary(window: pd.DataFrame) -> dict[str, Any]:
    """Accuracy and BMA (balanced accuracy over the classes present among the labels) of the
    reviewed cases in the window."""
    reviewed = window[window["label"].notna()]
    if reviewed.empty:
        return {"n_reviewed": 0, "accuracy": None, "balanced_accuracy": None, "per_class": {}}
    index = {code: i for i, code in enumerate(CLASS_CODES)}
    y_true = reviewed["label"].map(index).to_numpy()
    y_pred = reviewed["predicted_class"].map(index).to_numpy()
    per_class = {}
    for code in CLASS_CODES:
        mask = y_true == index[code]
        if mask.any():
            per_class[code] = {
                "n": int(mask.sum()),
                "recall": float((y_pred[mask] == index[code]).mean()),
            }
    return {
        "n_reviewed": int(len(reviewed)),
        "accuracy": accuracy(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, len(CLASS_CODES)),
        "per_class": per_class,
    }


def run_monitor(
    window_frame: pd.DataFrame,
    window: Window,
    model_dir: Path,
    settings: MonitorSettings,
    *,
    database: str | None = None,
) -> MonitorResult:
    """Write report.html and summary.json into settings.reports_dir; return the summary."""
    model_dir = Path(model_dir)
    card_path = model_dir / "model.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    reference = load_reference(model_dir)
    n = int(len(window_frame))
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(UTC).isoformat(),
        "window": window.to_dict(),
        "database": database,
        "reference": {
            "model_dir": str(model_dir),
            "model_version": card.get("version"),
            "card_sha256": card.get("card_sha256"),
            "n_images": int(len(reference)),
        },
        "n_predictions": n,
        "model_versions": {
            str(k): int(v) for k, v in window_frame["model_version"].value_counts().items()
        },
        "min_records": settings.min_records,
        "status": "ok",
        "drift_score": None,
        "drift_detected": None,
        "input_drift": None,
        "prediction_drift": None,
        "ood": ood_summary(window_frame, card),
        "performance": performance_summary(window_frame),
    }
    report_path: Path | None = settings.reports_dir / REPORT_FILE
    if n < settings.min_records:
        summary["status"] = "too_few_records"
        summary["reason"] = (
            f"{n} predictions in the window, fewer than monitor.min_records="
            f"{settings.min_records}: no drift test (widen --days or --since)"
        )
        report_path = None
        stale = settings.reports_dir / REPORT_FILE
        if stale.exists():
            stale.unlink()  # an old report must not pass for this window's
    else:
        current = window_frame.copy()
        for key in STAT_KEYS:
            current[key] = current[key].astype(float)
        snapshot, input_drift, prediction = _drift_report(current, reference, settings)
        summary["input_drift"] = input_drift
        summary["prediction_drift"] = prediction
        summary["drift_score"] = input_drift["drift_score"]
        summary["drift_detected"] = bool(
            input_drift["detected"] or (prediction is not None and prediction["detected"])
        )
        settings.reports_dir.mkdir(parents=True, exist_ok=True)
        tmp = report_path.with_name(f".{report_path.name}.tmp.html")
        snapshot.save_html(str(tmp))
        os.replace(tmp, report_path)
    summary_path = settings.reports_dir / SUMMARY_FILE
    _write_atomic(summary_path, json.dumps(summary, indent=2, default=_json_default) + "\n")
    return MonitorResult(summary, summary_path, report_path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
