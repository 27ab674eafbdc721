"""The train and evaluate stage scripts, run as DVC runs them (subprocesses in a project
directory) on real 32 px arrays, with a real MLflow SQLite store: one run holds both."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from skindx.config import compose_config, write_params

REPO = Path(__file__).resolve().parents[2]


def _stage(project: Path, script: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "pipelines" / script), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def project(processed_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    shutil.copytree(processed_dir, root / "data" / "processed")
    params = compose_config(
        ["experiment=quick", "train.epochs=2", "train.max_steps_per_epoch=2"],
        conf_dir=REPO / "conf",
    )
    write_params(params, root / "params.yaml")
    return root


@pytest.fixture(scope="module")
def env(project):
    import os

    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
        "OMP_NUM_THREADS": "1",
    }


@pytest.mark.slow
def test_evaluate_before_train_fails_readably(project, env):
    done = _stage(project, "evaluate.py", env)
    assert done.returncode == 1
    assert "evaluate: error" in done.stderr and "best.pt" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_train_then_evaluate_share_one_mlflow_run(project, env):
    trained = _stage(project, "train.py", env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "epoch 2/2" in trained.stderr  # the progress bar
    run_ref = json.loads((project / "models/train/run.json").read_text())
    checkpoint = torch.load(project / "models/train/best.pt", weights_only=True)
    assert checkpoint["config"]["model"]["arch"] == "resnet18"
    history = (project / "reports/train/history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,train_loss") and len(history) == 3

    evaluated = _stage(project, "evaluate.py", env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((project / "reports/metrics.json").read_text())
    for key in (
        "balanced_accuracy",
        "accuracy",
        "macro_f1",
        "roc_auc_macro",
        "melanoma_sensitivity",
        "ece_before",
        "ece_after",
        "temperature",
    ):
        assert isinstance(metrics[key], float), key
    assert set(metrics["per_class"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    temperature = json.loads((project / "reports/calibration/temperature.json").read_text())
    assert temperature["temperature"] == metrics["temperature"]
    plots = project / "reports/plots"
    assert len((plots / "confusion.csv").read_text().splitlines()) == 1 + 21
    assert len(list((plots / "roc").glob("*.csv"))) == 7
    assert {p.name for p in (plots / "images").glob("*.png")} == {
        "confusion_matrix.png",
        "roc.png",
        "reliability.png",
    }

    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    experiment = client.get_experiment_by_name("skindx")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == run_ref["run_id"]
    run = runs[0]
    assert run.data.params["model.arch"] == "resnet18" and run.data.params["train.epochs"] == "2"
    assert {"git_commit", "dvc_stage", "data_hash", "profile"} <= set(run.data.tags)
    assert run.data.tags["profile"] == "quick"
    curve = client.get_metric_history(run.info.run_id, "val_balanced_accuracy")
    assert [m.step for m in curve] == [1, 2]
    for name in ("train_loss", "val_loss", "val_macro_f1", "lr"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 2, name
    assert run.data.metrics["test_balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation/figures")}
    assert "evaluation/figures/roc.png" in artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == [
        "checkpoint/best.pt"
    ]
