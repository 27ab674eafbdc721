"""The names of the test metrics in reports/metrics.json (and the model card), and the one way
to flatten nested dicts. Torch-free, so that the registry, serving and the UI read the names
from here; skindx.evaluation.metrics computes the values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Classification quality on the test split, all higher-is-better: promote.metric is one of these.
QUALITY_METRICS: tuple[str, ...] = (
    "balanced_accuracy",
    "accuracy",
    "macro_f1",
    "roc_auc_macro",
    "melanoma_sensitivity",
)
# Calibration (temperature scaling on the validation split, measured on test).
CALIBRATION_METRICS: tuple[str, ...] = ("ece_before", "ece_after", "temperature")
# What the evaluate stage prints, logs to MLflow as test_<name>, and the UI headlines.
HEADLINE_METRICS: tuple[str, ...] = (*QUALITY_METRICS, *CALIBRATION_METRICS)
HIGHER_IS_BETTER: tuple[str, ...] = QUALITY_METRICS
PRIMARY_METRIC = "balanced_accuracy"  # model selection (early stopping) and the promotion default
METRIC_LABELS: dict[str, str] = {
    "balanced_accuracy": "Balanced accuracy",
    "accuracy": "Accuracy",
    "macro_f1": "Macro F1",
    "roc_auc_macro": "Macro ROC AUC",
    "melanoma_sensitivity": "Melanoma sensitivity",
    "ece_before": "Calibration error (ECE) before scaling",
    "ece_after": "Calibration error (ECE)",
    "temperature": "Temperature",
}
PER_CLASS_SCORES: tuple[str, ...] = ("precision", "recall", "f1", "roc_auc")


def flatten(mapping: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: MLflow params, registry tags, metric lookups."""
    flat: dict[str, Any] = {}
    for key, value in (mapping or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}{sep}", sep))
        else:
            flat[name] = value
    return flat


def flat_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a (nested) metrics dict, keys joined with '.' (per_class.mel.recall);
    None, NaN, booleans and text are left out."""
    return {
        key: float(value)
        for key, value in flatten(metrics, prefix).items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }
