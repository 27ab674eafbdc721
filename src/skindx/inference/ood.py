"""Out-of-distribution scoring: is an upload a dermatoscopic image like the training data?

numpy only (the torch-free core): the package stage fits a scorer on the model's own pooled
layer4 features of the training images and thresholds it on the validation images; serving,
evaluation and external validation load it from the package and call `OodScorer.score`.

Scores grow with strangeness (higher = further from the training data); an image is in
distribution when its score is at most the threshold. Methods (docs/ood.md argues the default):

- ``mahalanobis``: the smallest Mahalanobis distance from the global-average-pooled layer4
  features to a class mean, with one covariance shared by the classes (Lee et al. 2018),
  Ledoit-Wolf shrunk so that it is invertible with fewer images than feature channels; reported
  per feature dimension (d^2 / K, about 1 for training images).
- ``energy``: the negative free energy -logsumexp(logits) (Liu et al. 2020).
- ``combined``: the sum of both, each standardised by its median and interquartile range on the
  validation images.

Files in a package (listed and sealed by the card like every other file, no pickle):
`ood.json` (method, threshold, standardisation, provenance), `ood_whitening.npy` ([K, K]
float32, W with W W^T = inverse shared covariance) and `ood_means.npy` ([C, K] float32, the
class means already multiplied by W).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

OOD_FILE = "ood.json"
OOD_WHITENING_FILE = "ood_whitening.npy"
OOD_MEANS_FILE = "ood_means.npy"
METHODS = ("mahalanobis", "energy", "combined")
DEFAULT_METHOD = "mahalanobis"
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
class OodScorer:
    """A fitted scorer; `score(features, logits)` -> [N] float64, higher = more out of
    distribution; `in_distribution(scores)` -> [N] bool (score <= threshold)."""

    method: str
    threshold: float
    whitening: np.ndarray | None = field(default=None, repr=False)
    means: np.ndarray | None = field(default=None, repr=False)
    scales: dict[str, tuple[float, float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise OodError(f"unknown out-of-distribution method {self.method!r}: one of {METHODS}")
        if self.method != "energy" and (self.whitening is None or self.means is None):
            raise OodError(f"method {self.method!r} needs the whitening matrix and class means")
        if self.method == "combined" and not {"mahalanobis", "energy"} <= set(self.scales):
            raise OodError("method 'combined' needs the validation scales of both scores")

    @property
    def feature_channels(self) -> int | None:
        return None if self.whitening is None else int(self.whitening.shape[0])

    def mahalanobis(self, features: np.ndarray) -> np.ndarray:
        """min over classes of the squared whitened distance, divided by K."""
        if self.whitening is None or self.means is None:
            raise OodError("this scorer has no Mahalanobis parameters")
        x = pooled(features)
        if x.shape[1] != self.whitening.shape[0]:
            raise OodError(
                f"features have {x.shape[1]} channels, the scorer was fitted on "
                f"{self.whitening.shape[0]}: it belongs to another model"
            )
        z = x @ self.whitening.astype(np.float64)
        m = self.means.astype(np.float64)
        d2 = (z**2).sum(1)[:, None] - 2 * z @ m.T + (m**2).sum(1)[None, :]
        return np.maximum(d2.min(axis=1), 0.0) / x.shape[1]

    def components(self, features: np.ndarray | None, logits: np.ndarray | None) -> dict:
        """Each raw score the method uses (for reports: which one separates better)."""
        parts: dict[str, np.ndarray] = {}
        if self.method in ("mahalanobis", "combined"):
            if features is None:
                raise OodError(f"method {self.method!r} needs the layer4 features")
            parts["mahalanobis"] = self.mahalanobis(features)
        if self.method in ("energy", "combined"):
            if logits is None:
                raise OodError(f"method {self.method!r} needs the logits")
            parts["energy"] = energy(logits)
        return parts

    def score(self, features: np.ndarray | None, logits: np.ndarray | None = None) -> np.ndarray:
        parts = self.components(features, logits)
        if self.method != "combined":
            return parts[self.method]
        return sum((parts[k] - self.scales[k][0]) / self.scales[k][1] for k in sorted(parts))

    def in_distribution(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) <= self.threshold

    # --- package files ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "threshold": float(self.threshold),
            "score": "higher = further from the training data; in distribution if <= threshold",
            "scales": {k: list(v) for k, v in self.scales.items()},
            "files": {"whitening": OOD_WHITENING_FILE, "means": OOD_MEANS_FILE}
            if self.whitening is not None
            else {},
            **self.info,
        }

    def save(self, directory: str | Path) -> list[Path]:
        """Write ood.json (+ the two .npy files) into `directory`; returns the paths."""
        directory = Path(directory)
        written = []
        if self.whitening is not None and self.means is not None:
            for name, array in ((OOD_WHITENING_FILE, self.whitening), (OOD_MEANS_FILE, self.means)):
                np.save(directory / name, np.asarray(array, np.float32), allow_pickle=False)
                written.append(directory / name)
        (directory / OOD_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return [*written, directory / OOD_FILE]

    @classmethod
    def from_dict(cls, spec: dict[str, Any], directory: str | Path | None = None) -> OodScorer:
        """From ood.json's content (the card's `ood` section); arrays read from `directory`
        with allow_pickle=False."""
        if not isinstance(spec, dict) or "method" not in spec or "threshold" not in spec:
            raise OodError("the out-of-distribution spec needs `method` and `threshold`")
        files = spec.get("files") or {}
        arrays: dict[str, np.ndarray | None] = {"whitening": None, "means": None}
        for key in arrays:
            if key in files:
                if directory is None:
                    raise OodError("the scorer's arrays need the package directory")
                path = Path(directory) / Path(str(files[key])).name
                if not path.is_file():
                    raise OodError(f"{path} not found: the package's scorer is incomplete")
                arrays[key] = np.load(path, allow_pickle=False)
        whitening, means = arrays["whitening"], arrays["means"]
        if whitening is not None and means is not None:
            if whitening.ndim != 2 or whitening.shape[0] != whitening.shape[1]:
                raise OodError(f"{OOD_WHITENING_FILE}: expected [K, K], got {whitening.shape}")
            if means.ndim != 2 or means.shape[1] != whitening.shape[1]:
                raise OodError(f"{OOD_MEANS_FILE}: expected [C, K], got {means.shape}")
        known = {"method", "threshold", "scales", "files", "score"}
        return cls(
            method=str(spec["method"]),
            threshold=float(spec["threshold"]),
            whitening=whitening,
            means=means,
            scales={k: (float(v[0]), float(v[1])) for k, v in (spec.get("scales") or {}).items()},
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


def fit_scorer(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_logits: np.ndarray,
    *,
    n_classes: int,
    method: str = DEFAULT_METHOD,
    pass_rate: float = DEFAULT_PASS_RATE,
    train_logits: np.ndarray | None = None,
) -> OodScorer:
    """Fit on the training images' features, threshold at the `pass_rate` quantile of the
    validation images' scores (so that share of in-distribution images passes)."""
    if not 0 < pass_rate <= 1:
        raise OodError(f"pass_rate must be in (0, 1], got {pass_rate}")
    if len(val_features) == 0:
        raise OodError("no validation images to set the out-of-distribution threshold on")
    whitening, means, facts = fit_mahalanobis(train_features, train_labels, n_classes)
    probe = OodScorer("mahalanobis", np.inf, whitening, means)
    val_parts = {"mahalanobis": probe.mahalanobis(val_features), "energy": energy(val_logits)}
    scales = {k: robust_scale(v) for k, v in val_parts.items()}
    scorer = OodScorer(
        method,
        np.inf,
        whitening if method != "energy" else None,
        means if method != "energy" else None,
        scales if method == "combined" else {},
    )
    val_scores = scorer.score(val_features, val_logits)
    threshold = float(np.quantile(val_scores, pass_rate, method="higher"))
    scorer.threshold = threshold
    scorer.info = {
        "feature": "layer4, global average pooled",
        "fitted_on": {"split": "train", "n_images": facts["n_images"]},
        "threshold_on": {
            "split": "val",
            "n_images": int(len(val_scores)),
            "pass_rate_target": float(pass_rate),
            "pass_rate": float(np.mean(val_scores <= threshold)),
        },
        "covariance": {"estimator": "ledoit-wolf", "shrinkage": facts["shrinkage"]},
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
