"""The drift and performance report on real images: the prediction log is filled through the
real API (in-process, its real log writer and SQLite database), the report is Evidently's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skindx.inference.classes import CLASS_CODES
from skindx.inference.image_stats import STAT_KEYS, batch_image_stats
from skindx.monitor.__main__ import EXIT_DRIFT, EXIT_ERROR, main
from skindx.monitor.reference import REFERENCE_FILE, load_reference
from tests.conftest import REPO_ROOT
from tests.monitor.conftest import MonitorPackage, logging_api

# Evidently reports on a packaged model's logged predictions (seconds apiece): in `make test`
pytestmark = pytest.mark.slow

# the slow ones post 40-70 images through the API and run Evidently (30-60 s here)


def run_monitor(db: str, model_dir: Path, reports: Path, *extra: str) -> tuple[int, dict]:
    code = main(
        [
            "--db",
            db,
            "--model-dir",
            str(model_dir),
            "--reports-dir",
            str(reports),
            "--params",
            str(REPO_ROOT / "params.yaml"),
            *extra,
        ]
    )
    return code, json.loads((reports / "summary.json").read_text())


def darken(images: np.ndarray, factor: float = 0.6) -> np.ndarray:
    return (images.astype(np.float64) * factor).round().astype(np.uint8)


def colour_shift(images: np.ndarray) -> np.ndarray:
    """A warmer camera: red up, blue down, green unchanged."""
    shifted = images.astype(np.int16) + np.array([40, 0, -40], dtype=np.int16)
    return np.clip(shifted, 0, 255).astype(np.uint8)


def test_the_package_carries_a_sealed_reference_of_the_test_split(
    monitor_package: MonitorPackage,
):
    from skindx.inference import verify_package

    card = verify_package(monitor_package.model_dir)  # every sha256 intact
    assert {REFERENCE_FILE, "predictions.csv"} <= set(card["files"])
    reference = load_reference(monitor_package.model_dir)
    assert len(reference) == len(monitor_package.images)
    np.testing.assert_allclose(
        reference[list(STAT_KEYS)].to_numpy(), batch_image_stats(monitor_package.images), atol=1e-7
    )
    assert reference["label"].tolist() == monitor_package.dx
    assert set(reference["predicted_class"]) <= set(CLASS_CODES)


@pytest.mark.slow
def test_a_replay_of_the_test_split_raises_no_alarm(monitor_package: MonitorPackage, tmp_path):
    with logging_api(monitor_package.model_dir, tmp_path) as log:
        answers = [log.predict(image) for image in monitor_package.images]
        log.flush()
        code, summary = run_monitor(log.db, monitor_package.model_dir, tmp_path / "reports")
    assert code == 0
    assert summary["status"] == "ok"
    assert summary["n_predictions"] == len(monitor_package.images)
    assert summary["model_versions"] == {"monitor-1": len(answers)}
    assert summary["drift_detected"] is False
    assert summary["drift_score"] == summary["input_drift"]["drift_score"] == 0.0
    assert summary["prediction_drift"]["detected"] is False
    mix = summary["prediction_drift"]["current_mix"]
    assert mix == summary["prediction_drift"]["reference_mix"]  # the same model, same images
    assert summary["ood"]["rate"] is None and summary["ood"]["n_scored"] == 0
    assert summary["performance"] == {
        "n_reviewed": 0,
        "accuracy": None,
        "balanced_accuracy": None,
        "per_class": {},
    }
    html = (tmp_path / "reports" / "report.html").read_text()
    assert "Drifted Columns" in html and "mean_r" in html  # Evidently's drift widgets


@pytest.mark.slow
@pytest.mark.parametrize("shift", [darken, colour_shift], ids=["darkened", "colour-shifted"])
def test_darkened_or_colour_shifted_images_raise_the_alarm(
    monitor_package: MonitorPackage, tmp_path, shift
):
    with logging_api(monitor_package.model_dir, tmp_path) as log:
        for image in shift(monitor_package.images):
            log.predict(image)
        log.flush()
        code, summary = run_monitor(log.db, monitor_package.model_dir, tmp_path / "reports")
    assert code == EXIT_DRIFT
    drift = summary["input_drift"]
    assert summary["drift_detected"] is True and drift["detected"] is True
    assert drift["drift_score"] >= drift["drift_share"]
    if shift is darken:
        assert {"brightness", "mean_r", "mean_g", "mean_b"} <= set(drift["drifted_columns"])
    else:
        assert {"mean_r", "mean_b"} <= set(drift["drifted_columns"])
        assert "mean_g" not in drift["drifted_columns"]


@pytest.mark.slow
def test_reviewed_labels_move_the_reported_accuracy(monitor_package: MonitorPackage, tmp_path):
    from skindx.evaluation.metrics import balanced_accuracy

    images = monitor_package.images[:40]
    with logging_api(monitor_package.model_dir, tmp_path) as log:
        answers = [log.predict(image) for image in images]
        # 20 reviewers agree with the model...
        for answer in answers[:20]:
            log.label(answer["request_id"], answer["predicted_class"])
        log.flush()
        _, agreed = run_monitor(log.db, monitor_package.model_dir, tmp_path / "r1")
        # ...then 10 disagree (each confirms another class than the predicted one)
        wrong = []
        for answer in answers[20:30]:
            other = next(c for c in CLASS_CODES if c != answer["predicted_class"])
            log.label(answer["request_id"], other)
            wrong.append(other)
        _, mixed = run_monitor(log.db, monitor_package.model_dir, tmp_path / "r2")
    assert agreed["performance"]["n_reviewed"] == 20
    assert agreed["performance"]["accuracy"] == 1.0
    assert agreed["performance"]["balanced_accuracy"] == 1.0
    perf = mixed["performance"]
    assert perf["n_reviewed"] == 30
    assert perf["accuracy"] == pytest.approx(20 / 30)
    index = {c: i for i, c in enumerate(CLASS_CODES)}
    y_true = np.array(
        [index[a["predicted_class"]] for a in answers[:20]] + [index[w] for w in wrong]
    )
    y_pred = np.array([index[a["predicted_class"]] for a in answers[:30]])
    expected = balanced_accuracy(y_true, y_pred, len(CLASS_CODES))
    assert perf["balanced_accuracy"] == pytest.approx(expected)
    assert perf["balanced_accuracy"] < 1.0


def test_a_short_window_reports_too_few_records_not_a_verdict(
    monitor_package: MonitorPackage, tmp_path
):
    with logging_api(monitor_package.model_dir, tmp_path) as log:
        for image in monitor_package.images[:5]:
            log.predict(image)
        log.flush()
        reports = tmp_path / "reports"
        reports.mkdir()
        (reports / "report.html").write_text("an old report")
        code, summary = run_monitor(log.db, monitor_package.model_dir, reports)
        # a window that ends before any prediction holds none
        code_empty, empty = run_monitor(
            log.db, monitor_package.model_dir, reports, "--until", "2020-01-01"
        )
    assert code == 0 and summary["status"] == "too_few_records"
    assert summary["n_predictions"] == 5 and "min_records" in summary["reason"]
    assert summary["drift_score"] is None and summary["drift_detected"] is None
    assert not (reports / "report.html").exists()  # not left to pass for this window's
    assert code_empty == 0 and empty["n_predictions"] == 0


def test_errors_say_what_to_do(monitor_package: MonitorPackage, tmp_path, capsys):
    from sqlalchemy import create_engine

    from serving.predlog.migrate import upgrade

    db = f"sqlite:///{tmp_path / 'log.db'}"
    args = [
        "--db",
        db,
        "--reports-dir",
        str(tmp_path / "r"),
        "--params",
        str(REPO_ROOT / "params.yaml"),
    ]
    assert main([*args, "--model-dir", str(monitor_package.model_dir)]) == EXIT_ERROR
    assert "no prediction log at" in capsys.readouterr().err
    assert not (tmp_path / "log.db").exists()  # not created by looking
    engine = create_engine(db)
    with engine.connect():
        pass  # an empty database file: the API never started on it
    assert main([*args, "--model-dir", str(monitor_package.model_dir)]) == EXIT_ERROR
    assert "has no predictions table: start the API once" in capsys.readouterr().err
    upgrade(engine)
    engine.dispose()
    old_package = tmp_path / "old-package"
    old_package.mkdir()
    assert main([*args, "--model-dir", str(old_package)]) == EXIT_ERROR
    assert "reference.csv not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--since", "last tuesday"])
    assert "not an ISO date" in capsys.readouterr().err
