"""The torch-free out-of-distribution scorer (skindx.inference.ood) on synthetic features."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skindx.inference.ood import (
    OOD_FILE,
    OodError,
    OodScorer,
    auroc,
    energy,
    fit_scorer,
    ledoit_wolf,
)

STAGES = {"layer1": 6, "layer2": 10}
CENTRES = np.random.default_rng(7).normal(0, 3, (3, sum(STAGES.values())))


def clusters(rng, n, shift=0.0):
    """Pooled features of 3 classes (two stages side by side) and their labels."""
    labels = rng.integers(0, 3, n)
    return CENTRES[labels] + rng.normal(shift, 1.0, (n, sum(STAGES.values()))), labels


@pytest.fixture
def fitted():
    rng = np.random.default_rng(0)
    train, labels = clusters(np.random.default_rng(1), 300)
    val, _ = clusters(np.random.default_rng(2), 300)
    return fit_scorer(train, labels, val, stages=STAGES, n_classes=3), val, rng


def test_ledoit_wolf_matches_sklearn():
    from sklearn.covariance import ledoit_wolf as sklearn_lw

    x = np.random.default_rng(0).normal(size=(40, 60))  # fewer rows than columns
    x -= x.mean(0)
    ours, shrinkage = ledoit_wolf(x)
    theirs, expected = sklearn_lw(x, assume_centered=True)
    assert shrinkage == pytest.approx(expected)
    np.testing.assert_allclose(ours, theirs, atol=1e-10)


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 5, 50).astype(float), rng.integers(2, 8, 30).astype(float)
    expected = roc_auc_score([0] * 50 + [1] * 30, np.concatenate([a, b]))
    assert auroc(a, b) == pytest.approx(expected)
    with pytest.raises(OodError):
        auroc([], [1.0])


def test_threshold_passes_the_target_share_of_validation_images(fitted):
    scorer, val, _ = fitted
    inside = scorer.in_distribution(scorer.score(val))
    assert 0.95 <= inside.mean() <= 0.97
    assert scorer.info["threshold_on"]["pass_rate"] == pytest.approx(inside.mean())


def test_shifted_features_score_higher_and_are_rejected(fitted):
    scorer, val, _ = fitted
    far, _ = clusters(np.random.default_rng(3), 300, shift=4.0)
    assert auroc(scorer.score(val), scorer.score(far)) > 0.99
    assert scorer.in_distribution(scorer.score(far)).mean() < 0.05
    # a stage alone also sees it; the components report each stage
    parts = scorer.components(far)
    assert set(parts) == set(STAGES) and all(len(v) == 300 for v in parts.values())


def test_save_and_load_round_trip_without_pickle(fitted, tmp_path):
    scorer, val, _ = fitted
    written = scorer.save(tmp_path)
    assert sorted(p.name for p in written) == sorted(scorer.files)
    for path in written:
        if path.suffix == ".npy":
            np.load(path, allow_pickle=False)  # plain arrays, nothing to unpickle
    loaded = OodScorer.load(tmp_path)
    np.testing.assert_allclose(loaded.score(val), scorer.score(val), rtol=1e-5, atol=1e-5)
    assert loaded.threshold == scorer.threshold
    assert json.loads((tmp_path / OOD_FILE).read_text())["stages"][0]["name"] == "layer1"


def test_mismatched_features_and_broken_files_are_clear_errors(fitted, tmp_path):
    scorer, _, _ = fitted
    with pytest.raises(OodError, match="another model"):
        scorer.score(np.zeros((2, 5)))
    scorer.save(tmp_path)
    (tmp_path / scorer.files[1]).unlink()
    with pytest.raises(OodError, match="incomplete"):
        OodScorer.load(tmp_path)
    with pytest.raises(OodError):
        OodScorer.from_dict({"threshold": 1.0}, tmp_path)


def test_energy_is_negative_logsumexp():
    logits = np.array([[0.0, 0.0], [10.0, -10.0]])
    np.testing.assert_allclose(energy(logits), -np.log(np.exp(logits).sum(1)))
