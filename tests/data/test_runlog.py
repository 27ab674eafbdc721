"""Data-stage runs land in MLflow's data experiment with lineage tags (real SQLite store)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from skindx.data.runlog import class_distribution_figure, log_data_run


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/manifest.json").write_text(json.dumps({"data_hash": "abc123"}))
    return tmp_path


@pytest.mark.slow  # over 8 s here: a whole stage, MLflow store or several epochs
def test_run_in_data_experiment_with_lineage(project: Path):
    uri = f"sqlite:///{project / 'store.db'}"
    params = {
        "profile": "quick",
        "paths": {"raw_dir": "data/raw"},
        "mlflow": {"tracking_uri": uri, "experiment": "skindx", "data_experiment": "data-x"},
    }
    (project / "summary.json").write_text("{}")
    counts = {"train": {"nv": 5, "mel": 2}, "val": {"nv": 1, "mel": 1}}
    run_id = log_data_run(
        "validate",
        params,
        run_params={"layout": "flat"},
        metrics={"n_failed": 0},
        artifacts=[project / "summary.json", project / "absent.json"],
        datasets={"train": pd.DataFrame({"image_id": ["a"], "dx": ["nv"]})},
        figure=class_distribution_figure(counts),
    )
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "data-x"
    assert run.data.tags["dvc_stage"] == "validate"
    assert run.data.tags["data_hash"] == "abc123"
    assert run.data.tags["profile"] == "quick"
    assert "git_commit" in run.data.tags
    assert run.data.params == {"layout": "flat"} and run.data.metrics == {"n_failed": 0.0}
    assert {a.path for a in client.list_artifacts(run_id)} == {
        "summary.json",
        "class_distribution.png",
    }
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["ham10000-train"]


@pytest.mark.slow
def test_tracking_failure_warns_and_does_not_fail_the_stage(project: Path, capsys):
    (project / "blocker").write_text("a file where the store's folder should be")
    params = {"mlflow": {"tracking_uri": f"sqlite:///{project / 'blocker' / 'store.db'}"}}
    assert log_data_run("ingest", params, metrics={"n": 1}) is None
    assert "could not log to MLflow" in capsys.readouterr().err


def test_tracking_switched_off_logs_nothing(project: Path, monkeypatch, capsys):
    uri = f"sqlite:///{project / 'store.db'}"
    monkeypatch.setenv("SKINDX_TRACKING", "off")
    assert log_data_run("ingest", {"mlflow": {"tracking_uri": uri}}, metrics={"n": 1}) is None
    assert "tracking is off" in capsys.readouterr().out
    assert not (project / "store.db").exists()
