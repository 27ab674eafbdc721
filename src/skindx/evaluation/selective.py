"""The "uncertain" state: a confidence threshold chosen on the validation split, and the accuracy
of the answers above it on the test split (selective accuracy at its coverage).

A prediction whose calibrated top-1 probability is below the threshold is marked uncertain
("see a dermatologist") instead of being shown as a diagnosis. The threshold is the lowest
confidence at which the validation answers kept are right at least `target_accuracy` of the
time, so that as many images as possible keep an answer. If no threshold reaches the target
(a weak model), the one with the best validation selective accuracy among those keeping at
least `min_coverage` of the images is used, and `target_met` says so. The test split is then
scored at that threshold, never used to choose it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def selective_accuracy(confidence: np.ndarray, correct: np.ndarray, threshold: float):
    """(coverage, accuracy of the answers with confidence >= threshold); accuracy NaN if none."""
    keep = np.asarray(confidence) >= threshold
    coverage = float(keep.mean()) if len(keep) else float("nan")
    accuracy = float(np.asarray(correct)[keep].mean()) if keep.any() else float("nan")
    return coverage, accuracy


def choose_threshold(
    confidence: np.ndarray,
    correct: np.ndarray,
    *,
    target_accuracy: float,
    min_coverage: float = 0.1,
) -> tuple[float, bool]:
    """(threshold, target_met) from validation confidences and correctness."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, bool)
    if not len(confidence):
        raise ValueError("no validation predictions to choose the uncertainty threshold on")
    order = np.argsort(-confidence, kind="mergesort")
    conf, hits = confidence[order], correct[order]
    # answers kept at threshold conf[k] are the first k+1 (ties: the last of each tie group)
    last_of_tie = np.r_[np.flatnonzero(np.diff(conf)), len(conf) - 1]
    kept = last_of_tie + 1
    accuracy = np.cumsum(hits)[last_of_tie] / kept
    reaching = np.flatnonzero(accuracy >= target_accuracy - 1e-12)
    if len(reaching):
        return float(conf[last_of_tie[reaching[-1]]]), True
    allowed = np.flatnonzero(kept / len(conf) >= min_coverage)
    best = allowed[np.argmax(accuracy[allowed])] if len(allowed) else len(kept) - 1
    return float(conf[last_of_tie[best]]), False


def uncertainty_report(
    val_probs: np.ndarray,
    val_labels: np.ndarray,
    test_probs: np.ndarray,
    test_labels: np.ndarray,
    *,
    target_accuracy: float = 0.8,
    min_coverage: float = 0.1,
) -> dict[str, Any]:
    """The `selective` section of metrics.json (calibrated probabilities in)."""
    if not 0 < target_accuracy <= 1 or not 0 < min_coverage <= 1:
        raise ValueError(
            f"evaluate.uncertain: target_accuracy {target_accuracy} and min_coverage "
            f"{min_coverage} must be in (0, 1]"
        )
    val_conf, val_correct = val_probs.max(1), val_probs.argmax(1) == val_labels
    test_conf, test_correct = test_probs.max(1), test_probs.argmax(1) == test_labels
    threshold, met = choose_threshold(
        val_conf, val_correct, target_accuracy=target_accuracy, min_coverage=min_coverage
    )
    val_coverage, val_accuracy = selective_accuracy(val_conf, val_correct, threshold)
    coverage, accuracy = selective_accuracy(test_conf, test_correct, threshold)
    return {
        "threshold": threshold,
        "score": "calibrated top-1 probability",
        "chosen_on": "validation",
        "target_accuracy": float(target_accuracy),
        "target_met": bool(met),
        "val_coverage": val_coverage,
        "val_accuracy": val_accuracy,
        "coverage": coverage,
        "accuracy": accuracy,
        "accuracy_all": float(test_correct.mean()) if len(test_correct) else float("nan"),
    }
