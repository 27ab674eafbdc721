"""The evaluate stage's intervals and predictions on a really trained checkpoint, and
determinism: the same seed on one machine gives the same metrics, bit for bit."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from skindx.config import ProjectPaths
from skindx.data.processed import load_class_weights, load_split, read_contract
from skindx.evaluation.bootstrap import INTERVAL_METRICS
from skindx.evaluation.predictions import PREDICTIONS_FILE, read_predictions
from skindx.evaluation.stage import evaluate_checkpoint, run_evaluate
from skindx.models.checkpoint import BEST, cpu_state_copy, save_checkpoint
from tests.helpers.training import MODEL, make_trainer

pytestmark = pytest.mark.slow  # trains the tiny config twice

BOOTSTRAP = {"n_resamples": 300, "confidence": 0.95, "seed": 3}


def trained_checkpoint(processed_dir, out_dir):
    """A few real training steps of the tiny config (seed 7), saved as evaluate reads it."""
    trainer = make_trainer(processed_dir, out_dir / "train", epochs=2, max_steps_per_epoch=3)
    trainer.fit()
    classes, _ = load_class_weights(processed_dir)
    return save_checkpoint(
        out_dir / BEST,
        {
            "model_state": cpu_state_copy(trainer.model.eval()),
            "epoch": 1,
            "best_epoch": 1,
            "config": {
                "model": MODEL,
                "classes": classes,
                "contract": read_contract(processed_dir).to_dict(),
            },
        },
    )


@pytest.fixture(scope="module")
def two_runs(processed_dir, tmp_path_factory):
    return [trained_checkpoint(processed_dir, tmp_path_factory.mktemp(f"run{i}")) for i in range(2)]


def test_same_seed_same_metrics(two_runs, processed_dir):
    first, second = (evaluate_checkpoint(p, processed_dir, bootstrap=BOOTSTRAP) for p in two_runs)
    assert json.dumps(first["metrics"], sort_keys=True) == json.dumps(
        second["metrics"], sort_keys=True
    )
    np.testing.assert_array_equal(first["probs"], second["probs"])


def test_intervals_bracket_the_point_values(two_runs, processed_dir):
    metrics = evaluate_checkpoint(two_runs[0], processed_dir, bootstrap=BOOTSTRAP)["metrics"]
    for name in INTERVAL_METRICS:
        low, high = metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"]
        assert 0.0 <= low <= metrics[name] <= high <= 1.0, name
    for code, scores in metrics["per_class"].items():
        assert scores["recall_ci_low"] <= scores["recall"] <= scores["recall_ci_high"], code
    lesions = {
        row["lesion_id"] for row in csv.DictReader((processed_dir / "splits" / "test.csv").open())
    }
    assert metrics["bootstrap"] == {
        "method": "percentile, lesions resampled with replacement",
        "confidence": 0.95,
        "n_resamples": 300,
        "seed": 3,
        "n_lesions": len(lesions),
    }


def test_run_evaluate_writes_intervals_and_predictions(
    two_runs, processed_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("SKINDX_TRACKING", "off")
    train_dir = tmp_path / "models" / "train"
    train_dir.mkdir(parents=True)
    (train_dir / BEST).write_bytes(two_runs[0].read_bytes())
    paths = {name: str(tmp_path / name) for name in ProjectPaths.__dataclass_fields__}
    paths |= {
        "train_dir": str(train_dir),
        "processed_dir": str(processed_dir),
        "metrics": str(tmp_path / "reports" / "metrics.json"),
        "temperature": str(tmp_path / "reports" / "temperature.json"),
        "plots_dir": str(tmp_path / "reports" / "plots"),
    }
    returned = run_evaluate(
        {"evaluate": {"batch_size": 8, "ece_bins": 10, "bootstrap": BOOTSTRAP}, "paths": paths}
    )
    written = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert (
        written == returned and written["balanced_accuracy_ci_high"] >= written["balanced_accuracy"]
    )
    selective = written["selective"]
    assert 0 <= selective["threshold"] <= 1 and selective["chosen_on"] == "validation"
    assert 0 <= selective["coverage"] <= 1
    predictions = read_predictions(tmp_path / "reports" / "plots" / PREDICTIONS_FILE)
    test = load_split(processed_dir, "test")
    assert predictions.labels.tolist() == test.labels.tolist()
    with (processed_dir / "splits" / "test.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert predictions.image_ids == [r["image_id"] for r in rows]
    assert predictions.lesion_ids == [r["lesion_id"] for r in rows]
    np.testing.assert_allclose(predictions.probs.sum(axis=1), 1.0, atol=1e-9)
