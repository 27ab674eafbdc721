"""The lesion-grouped bootstrap (skindx.evaluation.bootstrap): its point values agree with the
metrics, it groups, it covers, it is deterministic, and the paired difference behaves."""

from __future__ import annotations

import numpy as np
import pytest

from skindx.evaluation.bootstrap import (
    bootstrap_intervals,
    paired_difference,
    resample_weights,
    scores_from_confusion,
    weighted_confusion,
)
from skindx.evaluation.metrics import classification_report
from skindx.inference.classes import CLASS_CODES

CLASSES = list(CLASS_CODES)


def noisy_predictions(labels: np.ndarray, accuracy: float, rng) -> np.ndarray:
    """Each label kept with probability `accuracy`, else a random other class."""
    wrong = (labels + rng.integers(1, len(CLASSES), len(labels))) % len(CLASSES)
    return np.where(rng.random(len(labels)) < accuracy, labels, wrong)


def test_full_weights_reproduce_the_reported_metrics():
    rng = np.random.default_rng(1)
    labels = rng.choice([0, 1, 2, 4, 5], size=300)  # df and vasc absent from the truth
    pred = rng.integers(0, len(CLASSES), 300)  # but predicted
    probs = np.eye(len(CLASSES))[pred]
    report = classification_report(labels, probs, CLASSES)
    scores = scores_from_confusion(
        weighted_confusion(labels, pred, np.ones((1, 300)), len(CLASSES)), CLASSES
    )
    for name in ("balanced_accuracy", "macro_f1", "melanoma_sensitivity"):
        assert scores[name][0] == pytest.approx(report[name], abs=1e-12), name
    for code in CLASSES:
        recall = scores[f"recall.{code}"][0]
        if report["per_class"][code]["support"]:
            assert recall == pytest.approx(report["per_class"][code]["recall"], abs=1e-12)
        else:
            assert np.isnan(recall)  # no recall for an absent class, as the metric leaves it out


def test_a_resample_draws_whole_lesions():
    groups = ["a", "a", "a", "b", "c", "c"]
    weights = resample_weights(groups, 6, 200, seed=3)
    assert weights.shape == (200, 6)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 1] == weights[:, 2]).all()
    assert (weights[:, 4] == weights[:, 5]).all()
    # as many lesions as the split has are drawn each time
    lesion_draws = weights[:, 0] + weights[:, 3] + weights[:, 4]
    assert (lesion_draws == 3).all()


def test_duplicated_lesions_widen_the_grouped_interval_and_not_the_ungrouped_one():
    """Five images of each of 80 lesions carry the information of 80 images: grouped
    resampling gives about the interval of the 80 (width within 25 %), image resampling a
    false precision (about 1/sqrt(5) of it)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(CLASSES), 80)
    pred = noisy_predictions(labels, 0.6, rng)
    lesions = [f"L{i}" for i in range(80)]
    kwargs = {"n_resamples": 2000, "confidence": 0.95, "seed": 5}

    def width(interval):
        return interval.high - interval.low

    single = bootstrap_intervals(labels, pred, CLASSES, groups=lesions, **kwargs)
    dup_labels, dup_pred = np.repeat(labels, 5), np.repeat(pred, 5)
    dup_lesions = list(np.repeat(lesions, 5))
    grouped = bootstrap_intervals(dup_labels, dup_pred, CLASSES, groups=dup_lesions, **kwargs)
    ungrouped = bootstrap_intervals(dup_labels, dup_pred, CLASSES, groups=None, **kwargs)
    for name in ("balanced_accuracy", "macro_f1"):
        assert width(grouped[name]) == pytest.approx(width(single[name]), rel=0.25), name
        assert width(grouped[name]) > 1.7 * width(ungrouped[name]), name


def test_the_95_percent_interval_covers_the_true_recall_about_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    true_recall, covered, trials = 0.7, 0, 200
    for trial in range(trials):
        labels = np.full(120, CLASSES.index("mel"))
        pred = noisy_predictions(labels, true_recall, rng)
        interval = bootstrap_intervals(
            labels, pred, CLASSES, groups=None, n_resamples=500, seed=trial
        )["melanoma_sensitivity"]
        covered += interval.low <= true_recall <= interval.high
    assert 0.88 <= covered / trials <= 0.99


def test_same_seed_same_intervals_other_seed_other_intervals():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, len(CLASSES), 200)
    pred = noisy_predictions(labels, 0.5, rng)
    groups = list(rng.integers(0, 90, 200).astype(str))
    first, again, other = (
        bootstrap_intervals(labels, pred, CLASSES, groups=groups, n_resamples=300, seed=s)
        for s in (7, 7, 8)
    )
    assert first == again
    assert first != other


def test_refuses_too_few_resamples_and_a_bad_confidence():
    labels = np.zeros(10, np.int64)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_intervals(labels, labels, CLASSES, groups=None, n_resamples=10)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_intervals(labels, labels, CLASSES, groups=None, confidence=95)


def test_paired_difference_of_identical_models_is_exactly_zero():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, len(CLASSES), 300)
    pred = noisy_predictions(labels, 0.6, rng)
    result = paired_difference(labels, pred, pred.copy(), CLASSES, groups=None, n_resamples=500)
    assert result.delta == 0 and result.interval.low == 0 == result.interval.high
    assert result.p_value == 1.0


def test_paired_difference_sees_a_clearly_better_model_and_not_noise():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, len(CLASSES), 600)
    groups = list((np.arange(600) // 3).astype(str))  # three images per lesion
    weak = noisy_predictions(labels, 0.45, rng)
    strong = noisy_predictions(labels, 0.75, rng)
    better = paired_difference(labels, strong, weak, CLASSES, groups=groups, n_resamples=1000)
    assert better.delta > 0.2 and better.interval.low > 0.15 and better.p_value < 0.01
    assert better.n_images == 600 and better.n_groups == 200
    # another draw of the same quality: the interval straddles 0
    twin = noisy_predictions(labels, 0.45, rng)
    noise = paired_difference(labels, twin, weak, CLASSES, groups=groups, n_resamples=1000)
    assert noise.interval.low < 0 < noise.interval.high
