"""Temperature scaling: recovers a known temperature, lowers ECE and NLL, keeps the argmax."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss

from skindx.evaluation.calibration import calibrate, fit_temperature, nll
from skindx.evaluation.metrics import expected_calibration_error, softmax


def _overconfident(seed: int, n: int = 3000, factor: float = 3.0):
    """Labels drawn from softmax(z) (so z is calibrated), logits = factor * z (overconfident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=(n, 7))
    p = softmax(z)
    labels = np.array([rng.choice(7, p=row) for row in p])
    return factor * z, labels


def test_nll_matches_scikit_learn():
    logits, labels = _overconfident(0, n=200)
    assert nll(logits, labels) == pytest.approx(log_loss(labels, softmax(logits), labels=range(7)))
    assert nll(logits, labels, 2.0) == pytest.approx(
        log_loss(labels, softmax(logits, 2.0), labels=range(7))
    )


@pytest.mark.parametrize("factor", [3.0, 0.5])
def test_fit_recovers_the_temperature(factor):
    logits, labels = _overconfident(1, factor=factor)
    assert fit_temperature(logits, labels) == pytest.approx(factor, rel=0.1)


def test_calibration_lowers_ece_and_nll_on_held_out_data():
    val_logits, val_labels = _overconfident(2)
    test_logits, test_labels = _overconfident(3)
    result = calibrate(val_logits, val_labels, test_logits, test_labels, n_bins=15)
    assert result.temperature > 1.5
    assert result.ece_after < result.ece_before / 2
    assert result.nll_after < result.nll_before
    assert result.ece_before == pytest.approx(
        expected_calibration_error(test_labels, softmax(test_logits))
    )
    # same argmax, so accuracy and balanced accuracy do not change
    np.testing.assert_array_equal(
        softmax(test_logits).argmax(1), softmax(test_logits, result.temperature).argmax(1)
    )


def test_empty_validation_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        fit_temperature(np.zeros((0, 7)), np.zeros(0, np.int64))
