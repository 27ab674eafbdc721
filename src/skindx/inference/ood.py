"""Out-of-distribution scoring: is an upload a dermatoscopic image like the training data?

numpy only (the torch-free core): the package stage fits a scorer on the model's own pooled
features of the training images and thresholds it on the validation images; serving,
evaluation and external validation load it from the package (PackagedModel.ood) and call
`OodScorer.score(pooled)` on the ONNX output `pooled`, or simply PackagedModel.analyse(images).

Scores grow with strangeness (higher = further from the training data); an image is in
distribution when its score is at most the threshold. The score (docs/ood.md argues it against
layer4 alone and the energy score, with measurements): for each backbone stage (layer1..layer4),
the smallest Mahalanobis distance from the stage's global-average-pooled features to a class
mean, with one covariance shared by the classes (Lee et al. 2018), Ledoit-Wolf shrunk so that it
is invertible with fewer images than channels; each standardised by its median and IQR on the
validation images, then summed. Early stages catch what is not a photograph of skin at all
(flat colours, noise, text), late ones what looks unlike a lesion.

Files in a package (listed in and sealed by the card like every other file, no pickle):
`ood.json` (threshold, stages, standardisation, provenance) and per stage
`ood_<stage>_whitening.npy` ([K, K] float32, W with W W^T = inverse shared covariance) and
`ood_<stage>_means.npy` ([C, K] float32, the class means already multiplied by W).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

OOD_FILE = "ood.json"
DEFAULT_METHOD = "mahalanobis"
METHODS = (DEFAULT_METHOD,)
DEFAULT_PASS_RATE = 0.95  # share of validation images that must pass the threshold


class OodError(ValueError):
    """The scorer's files are missing, malformed or do not match the model."""


def pooled(features: np.ndarray) -> np.ndarray:
    """layer4 features [N, K, h, w] (or [K, h, w]) -> global-average-pooled [N, K] float64,
    the vector the classifier's linear head sees."""
    features = np.asarray(features)
    if features.ndim == 3:
        features = features[None]
    if features.ndim == 4:
        return features.astype(np.float64).mean(axis=(2, 3))
    if features.ndim == 2:
        return features.astype(np.float64)
    raise OodError(f"expected features [N, K, h, w] or [N, K], got shape {features.shape}")


def energy(logits: np.ndarray) -> np.ndarray:
    """-logsumexp(logits) per row (higher = less like the training data)."""
    z = np.asarray(logits, np.float64)
    if z.ndim == 1:
        z = z[None]
    top = z.max(axis=1, keepdims=True)
    return -(top[:, 0] + np.log(np.exp(z - top).sum(axis=1)))


def ledoit_wolf(centred: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrinkage of the covariance of already centred rows [n, p]:
    (covariance, shrinkage), the same estimate as sklearn.covariance.ledoit_wolf."""
    x = np.asarray(centred, np.float64)
    n, p = x.shape
    sample = x.T @ x / n
    mu = np.trace(sample) / p
    delta = ((sample - mu * np.eye(p)) ** 2).sum() / p
    beta_bar = ((x**2).sum(axis=1) ** 2).sum() / p - n * (sample**2).sum() / p
    beta = min(beta_bar / n**2, delta)
    shrinkage = 0.0 if delta == 0 else beta / delta
    return shrinkage * mu * np.eye(p) + (1 - shrinkage) * sample, float(shrinkage)


def fit_mahalanobis(
    features: np.ndarray, labels: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Pooled train features [N, K] and labels -> (whitening [K, K], whitened means [C, K],
    facts). Classes without images get no mean (they cannot pull a score down)."""
    x = pooled(features)
    labels = np.asarray(labels).astype(int)
    present = [c for c in range(n_classes) if np.any(labels == c)]
    if len(present) == 0:
        raise OodError("no training images to fit the out-of-distribution scorer on")
    means = np.stack([x[labels == c].mean(axis=0) for c in present])
    centred = x - means[np.searchsorted(present, labels)]
    covariance, shrinkage = ledoit_wolf(centred)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    floor = max(float(eigenvalues.max()) * 1e-9, 1e-12)
    whitening = eigenvectors / np.sqrt(np.maximum(eigenvalues, floor))
    facts = {"classes_fitted": present, "shrinkage": shrinkage, "n_images": int(len(x))}
    return whitening.astype(np.float32), (means @ whitening).astype(np.float32), facts


def robust_scale(values: np.ndarray) -> tuple[float, float]:
    """(median, interquartile range) for standardising a score; IQR floored above zero."""
    q1, median, q3 = np.quantile(np.asarray(values, np.float64), [0.25, 0.5, 0.75])
    return float(median), float(max(q3 - q1, 1e-12))


@dataclass
class Stage:
    """One backbone stage's Mahalanobis model: whitening [K, K], whitened class means [C, K]
    and the median and IQR of its validation scores (to add stages on one scale)."""

    name: str
    whitening: np.ndarray = field(repr=False)
    means: np.ndarray = field(repr=False)
    centre: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        # float64 once, here: converting layer4's 2048 x 2048 whitening on every call was most
        # of a one-client request's time (bench/bench_serving.py, demo model: README)
        self.whitening = np.ascontiguousarray(self.whitening, np.float64)
        self.means = np.ascontiguousarray(self.means, np.float64)
        self._means_sq = (self.means**2).sum(1)[None, :]

    @property
    def channels(self) -> int:
        return int(self.whitening.shape[0])

    def distance(self, x: np.ndarray) -> np.ndarray:
        """min over classes of the squared whitened distance of pooled rows [N, K], / K."""
        z = np.asarray(x, np.float64) @ self.whitening
        d2 = (z**2).sum(1)[:, None] - 2 * z @ self.means.T + self._means_sq
        return np.maximum(d2.min(axis=1), 0.0) / self.channels

    def standardised(self, x: np.ndarray) -> np.ndarray:
        return (self.distance(x) - self.centre) / self.scale


@dataclass
class OodScorer:
    """A fitted scorer over the model's `pooled` output ([N, D]: the global average pool of
    each backbone stage, concatenated in `stages` order). `score(pooled)` -> [N] float64, higher
    = further from the training data; `in_distribution(scores)` -> [N] bool (<= threshold).

    The score is the sum over stages of each stage's Mahalanobis distance standardised on the
    validation images (the feature ensemble of Lee et al. 2018, with equal weights: no
    out-of-distribution data is used to fit it)."""

    threshold: float
    stages: list[Stage]
    method: str = DEFAULT_METHOD
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method != DEFAULT_METHOD:
            raise OodError(f"unknown out-of-distribution method {self.method!r}: {METHODS}")
        if not self.stages:
            raise OodError("an out-of-distribution scorer needs at least one stage")

    @property
    def channels(self) -> int:
        """D, the width of the pooled vector it scores."""
        return sum(stage.channels for stage in self.stages)

    def split(self, pooled_features: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(pooled_features, np.float64)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise OodError(
                f"expected pooled features [N, {self.channels}], got shape {x.shape}: the "
                "scorer belongs to another model"
            )
        bounds = np.cumsum([0, *(stage.channels for stage in self.stages)])
        return [x[:, a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def components(self, pooled_features: np.ndarray) -> dict[str, np.ndarray]:
        """Each stage's raw Mahalanobis score (for reports)."""
        return {
            stage.name: stage.distance(part)
            for stage, part in zip(self.stages, self.split(pooled_features), strict=True)
        }

    def score(self, pooled_features: np.ndarray) -> np.ndarray:
        parts = self.split(pooled_features)
        return sum(s.standardised(p) for s, p in zip(self.stages, parts, strict=True))

    def in_distribution(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) <= self.threshold

    # --- package files ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            **self.info,
            "method": self.method,
            "threshold": float(self.threshold),
            "score": "higher = further from the training data; in distribution if <= threshold",
            "stages": [
                {
                    "name": s.name,
                    "channels": s.channels,
                    "centre": s.centre,
                    "scale": s.scale,
                    "whitening": whitening_file(s.name),
                    "means": means_file(s.name),
                }
                for s in self.stages
            ],
        }

    @property
    def files(self) -> list[str]:
        return [OOD_FILE, *(f(s.name) for s in self.stages for f in (whitening_file, means_file))]

    def save(self, directory: str | Path) -> list[Path]:
        """Write ood.json and each stage's two .npy files into `directory`."""
        directory = Path(directory)
        for s in self.stages:
            np.save(directory / whitening_file(s.name), s.whitening.astype(np.float32))
            np.save(directory / means_file(s.name), s.means.astype(np.float32))
        (directory / OOD_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return [directory / name for name in self.files]

    @classmethod
    def from_dict(cls, spec: dict[str, Any], directory: str | Path) -> OodScorer:
        """From ood.json's content (the card's `ood` section); arrays read from `directory`
        with allow_pickle=False."""
        if not isinstance(spec, dict) or "threshold" not in spec or "stages" not in spec:
            raise OodError("the out-of-distribution spec needs `threshold` and `stages`")
        stages = []
        for entry in spec["stages"]:
            arrays = []
            for key in ("whitening", "means"):
                path = Path(directory) / Path(str(entry[key])).name
                if not path.is_file():
                    raise OodError(f"{path} not found: the package's scorer is incomplete")
                arrays.append(np.load(path, allow_pickle=False))
            whitening, means = arrays
            if whitening.ndim != 2 or whitening.shape[0] != whitening.shape[1]:
                raise OodError(f"{entry['whitening']}: expected [K, K], got {whitening.shape}")
            if means.ndim != 2 or means.shape[1] != whitening.shape[1]:
                raise OodError(f"{entry['means']}: expected [C, K], got {means.shape}")
            stages.append(
                Stage(
                    str(entry["name"]),
                    whitening,
                    means,
                    float(entry["centre"]),
                    float(entry["scale"]),
                )
            )
        known = {"method", "threshold", "stages", "score"}
        return cls(
            threshold=float(spec["threshold"]),
            stages=stages,
            method=str(spec.get("method", DEFAULT_METHOD)),
            info={k: v for k, v in spec.items() if k not in known},
        )

    @classmethod
    def load(cls, directory: str | Path) -> OodScorer:
        """The scorer of the package in `directory` (its ood.json and arrays)."""
        path = Path(directory) / OOD_FILE
        try:
            spec = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise OodError(f"{path}: cannot read the out-of-distribution scorer: {exc}") from exc
        return cls.from_dict(spec, directory)


def whitening_file(stage: str) -> str:
    return f"ood_{stage}_whitening.npy"


def means_file(stage: str) -> str:
    return f"ood_{stage}_means.npy"


def fit_scorer(
    train_pooled: np.ndarray,
    train_labels: np.ndarray,
    val_pooled: np.ndarray,
    *,
    stages: dict[str, int],
    n_classes: int,
    pass_rate: float = DEFAULT_PASS_RATE,
) -> OodScorer:
    """Fit each stage on the training images' pooled features, standardise it on the validation
    images, and threshold the sum at the `pass_rate` quantile of the validation scores (so that
    share of in-distribution images passes). `stages`: {name: channels}, in pooled order."""
    if not 0 < pass_rate <= 1:
        raise OodError(f"pass_rate must be in (0, 1], got {pass_rate}")
    if len(val_pooled) == 0:
        raise OodError("no validation images to set the out-of-distribution threshold on")
    bounds = np.cumsum([0, *stages.values()])
    fitted, shrinkage = [], {}
    for (name, _), a, b in zip(stages.items(), bounds[:-1], bounds[1:], strict=True):
        whitening, means, facts = fit_mahalanobis(train_pooled[:, a:b], train_labels, n_classes)
        stage = Stage(name, whitening, means)
        stage.centre, stage.scale = robust_scale(stage.distance(val_pooled[:, a:b]))
        fitted.append(stage)
        shrinkage[name] = facts["shrinkage"]
    scorer = OodScorer(np.inf, fitted)
    val_scores = scorer.score(val_pooled)
    scorer.threshold = float(np.quantile(val_scores, pass_rate, method="higher"))
    scorer.info = {
        "feature": "global average pool of each backbone stage (the ONNX output `pooled`)",
        "fitted_on": {"split": "train", "n_images": int(len(train_pooled))},
        "threshold_on": {
            "split": "val",
            "n_images": int(len(val_scores)),
            "pass_rate_target": float(pass_rate),
            "pass_rate": float(np.mean(val_scores <= scorer.threshold)),
        },
        "covariance": {"estimator": "ledoit-wolf, shared by the classes", "shrinkage": shrinkage},
        "classes_fitted": facts["classes_fitted"],
    }
    return scorer


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """P(score of an out-of-distribution image > score of an in-distribution one), ties 1/2:
    the area under the ROC curve of separating them by score."""
    a = np.asarray(in_scores, np.float64)
    b = np.asarray(out_scores, np.float64)
    if len(a) == 0 or len(b) == 0:
        raise OodError("AUROC needs in- and out-of-distribution scores")
    values = np.concatenate([a, b])
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    # average ranks of ties
    _, first, counts = np.unique(sorted_values, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(average, counts)
    rank_sum = ranks[len(a) :].sum()
    return float((rank_sum - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))
