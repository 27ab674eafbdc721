"""skindx.tracking: where runs go, how they are tagged, and the switch to run without MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skindx import tracking


def test_env_uri_wins_over_params(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    assert tracking.tracking_uri({"tracking_uri": "sqlite:///params.db"}).endswith("env.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    # the params' URI, its relative SQLite path anchored at the project root (here the cwd)
    assert (
        tracking.tracking_uri({"tracking_uri": "sqlite:///params.db"})
        == f"sqlite:///{Path.cwd().resolve()}/params.db"
    )


@pytest.mark.slow
def test_configure_logs_to_a_real_sqlite_store(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    mlflow = tracking.configure({"experiment": "skindx-test"})
    with mlflow.start_run() as run:
        mlflow.set_tags(tracking.lineage_tags("train", "quick"))
        mlflow.log_metric("x", 1.0)
    fetched = mlflow.get_run(run.info.run_id)
    assert fetched.data.metrics["x"] == 1.0
    assert fetched.data.tags["dvc_stage"] == "train"
    assert fetched.data.tags["profile"] == "quick"
    assert mlflow.get_experiment(run.info.experiment_id).name == "skindx-test"


def test_tracking_off_gives_a_null_tracker_with_the_same_calls(monkeypatch):
    monkeypatch.setenv("SKINDX_TRACKING", "off")
    mlflow = tracking.configure({})
    assert isinstance(mlflow, tracking.NullTracker)
    with mlflow.start_run(run_name="x") as run:
        mlflow.log_metrics({"a": 1.0}, step=1)
        mlflow.log_artifact("nowhere")
        mlflow.log_input(mlflow.data.from_pandas(None), context="train")
    assert run.info.run_id.startswith("untracked-")


def test_data_hash_and_run_id_come_from_the_stage_files(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"data_hash": "abc123"}))
    assert tracking.data_hash(manifest) == "abc123"
    assert tracking.data_hash(tmp_path / "missing.json") == "unknown"
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps({"run_id": "r1"}))
    assert tracking.pipeline_run_id(run_file) == "r1"
    assert tracking.pipeline_run_id(tmp_path / "none.json") is None


def test_git_commit_is_a_sha_in_this_repo():
    commit = tracking.git_commit()
    assert len(commit.split("-")[0]) == 40


def test_metric_names_and_flattening_are_defined_once():
    from skindx.inference import metrics

    assert metrics.HIGHER_IS_BETTER == metrics.QUALITY_METRICS
    assert set(metrics.HEADLINE_METRICS) <= set(metrics.METRIC_LABELS)
    nested = {"a": 1, "b": {"c": 2.5, "d": None, "e": float("nan"), "f": True, "g": "x"}}
    assert metrics.flatten(nested) == {
        "a": 1,
        "b.c": 2.5,
        "b.d": None,
        "b.e": nested["b"]["e"],
        "b.f": True,
        "b.g": "x",
    }
    assert metrics.flat_metrics(nested) == {"a": 1.0, "b.c": 2.5}


@pytest.mark.slow
def test_experiments_are_tagged_as_model_development(monkeypatch, tmp_path):
    """MLflow 3 files an untagged experiment under GenAI (traces); ours are model training."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    mlflow = tracking.configure({"experiment": "skindx-kind"})
    experiment = mlflow.get_experiment_by_name("skindx-kind")
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_DEVELOPMENT
    # an experiment made elsewhere without the tag gets it on the next configure
    other = mlflow.MlflowClient().create_experiment("made-elsewhere")
    assert tracking.EXPERIMENT_KIND_TAG not in mlflow.get_experiment(other).tags
    tracking.configure({"experiment": "made-elsewhere"})
    assert (
        mlflow.get_experiment(other).tags[tracking.EXPERIMENT_KIND_TAG]
        == "custom_model_development"
    )


@pytest.mark.slow
def test_a_relative_sqlite_store_is_the_checkouts_even_in_a_queued_experiment(
    monkeypatch, tmp_path
):
    """DVC runs a queued experiment in .dvc/tmp/exps/<tmp> with DVC_ROOT = the checkout: runs,
    artifacts and versions go to the checkout's mlflow.db and mlruns/, not to the temp copy."""
    checkout = tmp_path / "checkout"
    exp_copy = checkout / ".dvc" / "tmp" / "exps" / "tmpabc"
    exp_copy.mkdir(parents=True)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(exp_copy)
    monkeypatch.setenv("DVC_ROOT", str(checkout))
    params = {"tracking_uri": "sqlite:///mlflow.db", "experiment": "skindx-queue"}
    assert tracking.tracking_uri(params) == f"sqlite:///{checkout.resolve()}/mlflow.db"
    mlflow = tracking.configure(params)
    with mlflow.start_run() as run:
        (exp_copy / "note.txt").write_text("x")
        mlflow.log_artifact(str(exp_copy / "note.txt"))
    assert (checkout / "mlflow.db").is_file() and not (exp_copy / "mlflow.db").exists()
    assert list((checkout / "mlruns").rglob("note.txt")) and not (exp_copy / "mlruns").exists()
    assert mlflow.get_run(run.info.run_id).info.status == "FINISHED"
    # absolute URIs and servers are left alone; without DVC_ROOT the cwd is the root
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri sets it
    assert tracking.tracking_uri({"tracking_uri": "sqlite:////abs/x.db"}) == "sqlite:////abs/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000/mlflow")
    assert tracking.tracking_uri(params) == "http://mlflow:5000/mlflow"
    monkeypatch.delenv("DVC_ROOT")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri(params) == f"sqlite:///{exp_copy.resolve()}/mlflow.db"


@pytest.mark.slow
def test_processed_splits_are_logged_as_the_runs_datasets(monkeypatch, tmp_path, processed_dir):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    mlflow = tracking.configure({"experiment": "skindx-data-inputs"})
    with mlflow.start_run() as run:
        tracking.log_split_datasets(mlflow, processed_dir, "0123456789abcdef")
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    by_context = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i for i in inputs
    }
    assert set(by_context) == {"train", "val", "test"}
    for split, dataset_input in by_context.items():
        dataset = dataset_input.dataset
        rows = (processed_dir / "splits" / f"{split}.csv").read_text().strip().splitlines()
        assert dataset.name == f"ham10000-{split}"
        assert dataset.digest == f"0123456789ab-{split}-{len(rows) - 1}"
        assert json.loads(dataset.source)["uri"].endswith(f"splits/{split}.csv")
        columns = {c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
        assert {"image_id", "dx", "label"} <= columns
        assert any(
            t.key == "data_hash" and t.value == "0123456789abcdef" for t in dataset_input.tags
        )


def test_runs_view_url_opens_the_machine_learning_runs_table():
    url = tracking.runs_view_url("http://127.0.0.1:8080/mlflow/", "2")
    assert url == (
        "http://127.0.0.1:8080/mlflow/#/experiments/2/runs"
        "?workflowType=machine_learning&viewStateShareKey=skindx-headline"
    )


@pytest.mark.slow
def test_the_headline_view_shows_the_test_headline_metrics_best_first(monkeypatch, tmp_path):
    from skindx.inference.metrics import HEADLINE_METRICS

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    mlflow = tracking.configure({"experiment": "skindx-view"})
    tags = mlflow.get_experiment_by_name("skindx-view").tags
    view = json.loads(tags[tracking.VIEW_STATE_TAG_PREFIX + tracking.HEADLINE_VIEW])
    assert view["selectedColumns"][1:] == [f"metrics.`test_{m}`" for m in HEADLINE_METRICS]
    assert view["orderByKey"] == "metrics.`test_balanced_accuracy`" and not view["orderByAsc"]
