"""skindx.tracking: where runs go, how they are tagged, and the switch to run without MLflow."""

from __future__ import annotations

import json

from skindx import tracking


def test_env_uri_wins_over_params(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    assert tracking.tracking_uri({"tracking_uri": "sqlite:///params.db"}).endswith("env.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri({"tracking_uri": "sqlite:///params.db"}) == "sqlite:///params.db"


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
