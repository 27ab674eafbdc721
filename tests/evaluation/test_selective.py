"""The uncertain state's threshold: chosen on validation, scored on test."""

from __future__ import annotations

import numpy as np
import pytest

from skindx.evaluation.selective import choose_threshold, selective_accuracy, uncertainty_report
from skindx.export.card import uncertainty


def confident_when_right(n, seed):
    """Probabilities whose confidence tracks correctness (as a calibrated model's does)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, n)
    right = rng.random(n) < 0.6
    top = np.where(right, rng.uniform(0.5, 1.0, n), rng.uniform(0.2, 0.7, n))
    pred = np.where(right, labels, (labels + 1) % 7)
    probs = np.full((n, 7), 0.0)
    probs[np.arange(n), pred] = top
    rest = (1 - top) / 6
    probs += np.where(probs == 0, rest[:, None], 0)
    return probs, labels


def test_threshold_is_the_lowest_reaching_the_target_on_validation():
    probs, labels = confident_when_right(2000, 0)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    threshold, met = choose_threshold(conf, correct, target_accuracy=0.9)
    assert met
    coverage, accuracy = selective_accuracy(conf, correct, threshold)
    assert accuracy >= 0.9 and coverage < 1
    lower = conf[conf < threshold].max()  # the next lower threshold misses the target
    assert selective_accuracy(conf, correct, lower)[1] < 0.9


def test_unreachable_target_takes_the_best_threshold_with_min_coverage():
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([False, True, True, False])
    threshold, met = choose_threshold(conf, correct, target_accuracy=0.99, min_coverage=0.5)
    assert not met and threshold == 0.7  # 2/3 right keeping 75 %; 0.9 alone keeps too few


def test_report_scores_test_at_the_validation_threshold():
    val_probs, val_labels = confident_when_right(1500, 1)
    test_probs, test_labels = confident_when_right(1500, 2)
    report = uncertainty_report(
        val_probs, val_labels, test_probs, test_labels, target_accuracy=0.85
    )
    threshold = report["threshold"]
    expected = selective_accuracy(test_probs.max(1), test_probs.argmax(1) == test_labels, threshold)
    assert (report["coverage"], report["accuracy"]) == expected
    assert report["accuracy"] > report["accuracy_all"] and report["chosen_on"] == "validation"
    card = uncertainty({"selective": report})
    assert card["threshold"] == threshold and card["test_selective_accuracy"] == report["accuracy"]
    assert "tta" not in card  # evaluate.tta off: no threshold of its own
    averaged = uncertainty_report(
        val_probs * 0.9 + 0.1 / 7, val_labels, test_probs, test_labels, target_accuracy=0.85
    )
    both = uncertainty({"selective": report, "tta": {"selective": averaged}})
    assert both["threshold"] == threshold and both["tta"]["threshold"] == averaged["threshold"]
    assert averaged["threshold"] != threshold
    assert uncertainty({"balanced_accuracy": 0.5}) is None
    with pytest.raises(ValueError, match="target_accuracy"):
        uncertainty_report(val_probs, val_labels, test_probs, test_labels, target_accuracy=80)
