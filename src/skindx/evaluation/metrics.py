"""Classification metrics on numpy arrays (labels int, probabilities N x C).

Balanced multiclass accuracy is the ISIC 2018 Task 3 challenge metric, defined as in the
`isic-challenge-scoring` package: predictions are the argmax of the scores, and the score is
the mean over categories of true positives / positives (mean per-class recall). Categories
absent from the ground truth have no recall and are left out of the mean (as scikit-learn's
`balanced_accuracy_score` does); the test split has all seven.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from skindx.inference.model import softmax as shared_softmax

MELANOMA = "mel"


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """C[i, j] = number of samples of true class i predicted as j."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (scikit-learn's zero_division=0)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision, recall = _divide(tp, predicted), _divide(tp, support)
    f1 = _divide(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean per-class recall over the classes present in y_true (the ISIC challenge metric)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    present = cm.sum(axis=1) > 0
    if not present.any():
        return float("nan")
    return float(per_class_scores(cm)["recall"][present].mean())


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean F1 over the classes present in y_true or y_pred (scikit-learn's labels)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    present = (cm.sum(axis=1) + cm.sum(axis=0)) > 0
    return float(per_class_scores(cm)["f1"][present].mean()) if present.any() else float("nan")


def roc_curve(y_binary: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, starting at (0, 0) and ending at (1, 1)."""
    y_binary = np.asarray(y_binary, bool)
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    s, y = np.asarray(scores, np.float64)[order], y_binary[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps, fps = np.cumsum(y)[last_of_tie], np.cumsum(~y)[last_of_tie]
    pos, neg = y.sum(), (~y).sum()
    tpr = np.r_[0.0, tps / pos] if pos else np.full(len(tps) + 1, np.nan)
    fpr = np.r_[0.0, fps / neg] if neg else np.full(len(fps) + 1, np.nan)
    return fpr, tpr


def roc_auc(y_binary: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (trapezoidal, ties handled); NaN if one class is missing."""
    y_binary = np.asarray(y_binary, bool)
    if y_binary.all() or not y_binary.any():
        return float("nan")
    fpr, tpr = roc_curve(y_binary, scores)
    return float(np.trapezoid(tpr, fpr))


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """ECE of the top-1 prediction: sum over equal-width confidence bins of
    |accuracy - mean confidence| weighted by the bin's share of samples."""
    table = reliability_table(y_true, probs, n_bins)
    n = sum(row["count"] for row in table)
    if n == 0:
        return float("nan")
    return float(sum(row["count"] / n * abs(row["accuracy"] - row["confidence"]) for row in table))


def reliability_table(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> list[dict]:
    """Per non-empty confidence bin ((lo, hi], the first bin also holds 0): mean confidence,
    accuracy and count."""
    probs = np.asarray(probs, np.float64)
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    correct = pred == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right-closed bins (lo, hi]: index = ceil(conf * n_bins) - 1, clipped
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            rows.append(
                {
                    "bin": b,
                    "bin_lower": float(edges[b]),
                    "bin_upper": float(edges[b + 1]),
                    "confidence": float(conf[mask].mean()),
                    "accuracy": float(correct[mask].mean()),
                    "count": int(mask.sum()),
                }
            )
    return rows


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The shared softmax (skindx.inference.model), in float64 for the metrics."""
    return shared_softmax(logits, temperature, dtype=np.float64)


def classification_report(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    *,
    ece_bins: int = 15,
) -> dict[str, Any]:
    """Every headline metric, plus `per_class` {code: precision, recall, f1, roc_auc, support}."""
    y_true = np.asarray(y_true, np.int64)
    probs = np.asarray(probs, np.float64)
    n_classes = len(classes)
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    scores = per_class_scores(cm)
    aucs = [roc_auc(y_true == c, probs[:, c]) for c in range(n_classes)]
    valid_aucs = [a for a in aucs if not np.isnan(a)]
    mel = list(classes).index(MELANOMA) if MELANOMA in classes else None
    return {
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, n_classes),
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, n_classes),
        "roc_auc_macro": float(np.mean(valid_aucs)) if valid_aucs else float("nan"),
        "melanoma_sensitivity": float(scores["recall"][mel]) if mel is not None else float("nan"),
        "ece": expected_calibration_error(y_true, probs, ece_bins),
        "n_samples": int(len(y_true)),
        "per_class": {
            code: {
                "precision": float(scores["precision"][i]),
                "recall": float(scores["recall"][i]),
                "f1": float(scores["f1"][i]),
                "roc_auc": float(aucs[i]),
                "support": int(scores["support"][i]),
            }
            for i, code in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
    }
