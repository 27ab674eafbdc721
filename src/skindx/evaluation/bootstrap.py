"""Bootstrap confidence intervals for the test metrics, resampled by lesion.

HAM10000 holds several images of one lesion, and they are not independent: resampling images
would treat them as such and give intervals that are too narrow. Here a resample draws
*lesions* with replacement (as many as the test split has) and takes every image of each drawn
lesion, as often as the lesion was drawn (the cluster bootstrap). A resample is a vector of
per-image weights, so one confusion matrix per resample is a matrix product and a thousand
resamples of a few thousand images take well under a second.

The intervals are percentile intervals. `paired_difference` uses the same resamples for two
models' predictions on the same images, which is what makes a difference in balanced accuracy
between a candidate and a champion testable (promote's gate, skindx.registry.rule).

Numpy only: the registry imports this module for the paired test without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MELANOMA = "mel"
# The metrics that get an interval (top level of metrics.json) and the per-class one.
INTERVAL_METRICS: tuple[str, ...] = ("balanced_accuracy", "macro_f1", "melanoma_sensitivity")
PER_CLASS_INTERVAL = "recall"
CI_LOW, CI_HIGH = "_ci_low", "_ci_high"  # suffixes: balanced_accuracy_ci_low, ..._ci_high


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def to_dict(self) -> dict[str, float | None]:
        return {"low": _finite(self.low), "high": _finite(self.high)}


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def group_index(groups: Sequence) -> np.ndarray:
    """Each image's group as an integer 0..G-1 (images without a group are their own)."""
    keys = [
        (g if g is not None and g == g and str(g) != "" else f"__image_{i}")
        for i, g in enumerate(groups)
    ]
    _, index = np.unique(np.asarray(keys, dtype=str), return_inverse=True)
    return index.astype(np.int64)


def resample_weights(groups: Sequence | None, n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) float64: how many times each image is in each resample. `groups` None
    resamples images (every image its own group)."""
    index = np.arange(n) if groups is None else group_index(groups)
    if len(index) != n:
        raise ValueError(f"{len(index)} group ids for {n} images")
    n_groups = int(index.max()) + 1 if n else 0
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_resamples)
    return counts[:, index].astype(np.float64)


def weighted_confusion(
    y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray, num_classes: int
) -> np.ndarray:
    """(R, C, C): for each row of `weights`, the weighted confusion matrix C[i, j]."""
    cell = np.asarray(y_true, np.int64) * num_classes + np.asarray(y_pred, np.int64)
    onehot = np.zeros((len(cell), num_classes * num_classes))
    onehot[np.arange(len(cell)), cell] = 1.0
    return (weights @ onehot).reshape(len(weights), num_classes, num_classes)


def scores_from_confusion(cm: np.ndarray, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """The interval metrics of each confusion matrix in `cm` (R, C, C), with the same rules as
    skindx.evaluation.metrics: balanced accuracy over the classes present in the truth,
    macro-F1 over those present in truth or prediction, NaN where a class is absent."""
    with np.errstate(invalid="ignore", divide="ignore"):
        tp = np.diagonal(cm, axis1=1, axis2=2)
        support, predicted = cm.sum(axis=2), cm.sum(axis=1)
        recall = np.where(support > 0, tp / np.where(support > 0, support, 1), np.nan)
        precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), 0.0)
        r0 = np.nan_to_num(recall)
        denominator = precision + r0
        f1 = np.where(
            denominator > 0, 2 * precision * r0 / np.where(denominator > 0, denominator, 1), 0.0
        )
        present = support > 0
        either = present | (predicted > 0)
        bma = np.where(present.any(1), np.nansum(recall, 1) / np.maximum(present.sum(1), 1), np.nan)
        mf1 = np.where(either.any(1), (f1 * either).sum(1) / np.maximum(either.sum(1), 1), np.nan)
    out = {"balanced_accuracy": bma, "macro_f1": mf1}
    mel = list(classes).index(MELANOMA) if MELANOMA in classes else None
    out["melanoma_sensitivity"] = recall[:, mel] if mel is not None else np.full(len(cm), np.nan)
    for i, code in enumerate(classes):
        out[f"recall.{code}"] = recall[:, i]
    return out


def percentile_interval(values: np.ndarray, confidence: float) -> Interval:
    """The central `confidence` percentile interval of the finite values (NaN if none)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return Interval(float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(low), float(high))


def check_settings(n_resamples: int, confidence: float) -> None:
    if int(n_resamples) < 100:
        raise ValueError(
            f"evaluate.bootstrap.n_resamples is {n_resamples}: use at least 100 (1000 or more "
            "for stable 95 % bounds)"
        )
    if not 0.5 <= float(confidence) < 1.0:
        raise ValueError(f"the confidence level {confidence} must be in [0.5, 1), e.g. 0.95")


BOOTSTRAP_DEFAULTS = {"n_resamples": 1000, "confidence": 0.95, "seed": 0}


def intervals_from_settings(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: Sequence[str],
    *,
    groups: Sequence | None,
    settings: dict | None,
) -> dict[str, Interval]:
    """bootstrap_intervals with a config section (`evaluate.bootstrap`) over BOOTSTRAP_DEFAULTS:
    the one place the evaluate and external stages turn their settings into intervals."""
    merged = {**BOOTSTRAP_DEFAULTS, **(settings or {})}
    return bootstrap_intervals(
        y_true,
        y_pred,
        classes,
        groups=groups,
        n_resamples=int(merged["n_resamples"]),
        confidence=float(merged["confidence"]),
        seed=int(merged["seed"]),
    )


def bootstrap_intervals(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: Sequence[str],
    *,
    groups: Sequence | None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """{metric: Interval} for INTERVAL_METRICS and `recall.<code>` of every class."""
    check_settings(n_resamples, confidence)
    weights = resample_weights(groups, len(y_true), int(n_resamples), int(seed))
    cm = weighted_confusion(y_true, y_pred, weights, len(classes))
    return {
        name: percentile_interval(values, confidence)
        for name, values in scores_from_confusion(cm, classes).items()
    }


@dataclass(frozen=True)
class PairedDifference:
    """candidate - champion on the same images and the same resamples."""

    metric: str
    delta: float  # on the full test set
    interval: Interval
    p_value: float  # one-sided: share of resamples where the candidate is not better
    confidence: float
    n_resamples: int
    n_images: int
    n_groups: int

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "delta": _finite(self.delta),
            "ci_low": _finite(self.interval.low),
            "ci_high": _finite(self.interval.high),
            "confidence": self.confidence,
            "p_value": _finite(self.p_value),
            "n_resamples": self.n_resamples,
            "n_images": self.n_images,
            "n_groups": self.n_groups,
        }


def paired_difference(
    y_true: np.ndarray,
    candidate_pred: np.ndarray,
    champion_pred: np.ndarray,
    classes: Sequence[str],
    *,
    groups: Sequence | None,
    metric: str = "balanced_accuracy",
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Paired (lesion-grouped) bootstrap of metric(candidate) - metric(champion)."""
    check_settings(n_resamples, confidence)
    n = len(y_true)
    full = np.ones((1, n))
    weights = resample_weights(groups, n, int(n_resamples), int(seed))
    k = len(classes)

    def metric_of(pred, w):
        return scores_from_confusion(weighted_confusion(y_true, pred, w, k), classes)[metric]

    delta = float(metric_of(candidate_pred, full)[0] - metric_of(champion_pred, full)[0])
    deltas = metric_of(candidate_pred, weights) - metric_of(champion_pred, weights)
    finite = deltas[np.isfinite(deltas)]
    p_value = (1.0 + np.sum(finite <= 0)) / (1.0 + len(finite))
    n_groups = n if groups is None else int(group_index(groups).max()) + 1
    return PairedDifference(
        metric=metric,
        delta=delta,
        interval=percentile_interval(deltas, confidence),
        p_value=float(p_value),
        confidence=float(confidence),
        n_resamples=int(n_resamples),
        n_images=n,
        n_groups=n_groups,
    )


def paired_difference_from_settings(
    y_true: np.ndarray,
    candidate_pred: np.ndarray,
    baseline_pred: np.ndarray,
    classes: Sequence[str],
    *,
    groups: Sequence | None,
    settings: dict | None,
    metric: str = "balanced_accuracy",
) -> PairedDifference:
    """paired_difference with a config section (`evaluate.bootstrap`) over BOOTSTRAP_DEFAULTS,
    as intervals_from_settings does for the intervals."""
    merged = {**BOOTSTRAP_DEFAULTS, **(settings or {})}
    return paired_difference(
        y_true,
        candidate_pred,
        baseline_pred,
        classes,
        groups=groups,
        metric=metric,
        n_resamples=int(merged["n_resamples"]),
        confidence=float(merged["confidence"]),
        seed=int(merged["seed"]),
    )
