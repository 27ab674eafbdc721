"""Temperature scaling (Guo et al., 2017): one scalar T, fitted on the validation logits by
minimising the negative log-likelihood; probabilities become softmax(logits / T).

The NLL is convex in beta = 1/T, so a bounded scalar search over beta finds the optimum
reliably and deterministically. T leaves the argmax (and so accuracy) unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from skindx.evaluation.metrics import expected_calibration_error, softmax

T_MIN, T_MAX = 0.05, 20.0


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / T)."""
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(z)), np.asarray(labels, np.int64)]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [T_MIN, T_MAX] that minimises the NLL of `labels`."""
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on an empty validation split")
    result = minimize_scalar(
        lambda beta: nll(logits, labels, 1.0 / beta),
        bounds=(1.0 / T_MAX, 1.0 / T_MIN),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(1.0 / result.x)


@dataclass(frozen=True)
class CalibrationResult:
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def calibrate(
    val_logits: np.ndarray,
    val_labels: np.ndarray,
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    n_bins: int = 15,
) -> CalibrationResult:
    """Fit T on validation; report ECE and NLL on test before and after."""
    t = fit_temperature(val_logits, val_labels)
    return CalibrationResult(
        temperature=t,
        ece_before=expected_calibration_error(test_labels, softmax(test_logits), n_bins),
        ece_after=expected_calibration_error(test_labels, softmax(test_logits, t), n_bins),
        nll_before=nll(test_logits, test_labels),
        nll_after=nll(test_logits, test_labels, t),
    )
