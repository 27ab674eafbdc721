"""The three data stages through real DVC in a project copy: quick profile, real images,
a real MLflow SQLite store; then the cached no-op and a seed experiment."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import make_project_copy, project_env, run_dvc

pytestmark = pytest.mark.slow
DATA_STAGES = ("ingest", "validate", "preprocess")


@pytest.fixture(scope="module")
def repro(tmp_path_factory, small_source):
    project = make_project_copy(
        tmp_path_factory.mktemp("data_stages") / "skindx", ["experiment=quick"]
    )
    env = project_env(project, small_source)
    result = run_dvc(project, "repro", "preprocess", env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return project, env, result


def test_repro_runs_the_three_stages_and_names_the_source(repro, small_source):
    project, _, result = repro
    for stage in DATA_STAGES:
        assert f"Running stage '{stage}'" in result.stdout
    assert "Running stage 'train'" not in result.stdout
    assert f"using source {small_source} (from $SKINDX_DATA_DIR)" in result.stdout
    for split in ("train", "val", "test"):
        assert (project / f"data/processed/{split}_images.npy").is_file()


def test_second_repro_has_nothing_to_reproduce(repro):
    project, env, _ = repro
    again = run_dvc(project, "repro", "preprocess", env=env)
    assert again.returncode == 0, again.stderr
    assert "Running stage" not in again.stdout
    for stage in DATA_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in again.stdout


def test_metrics_show_validation_and_class_counts(repro):
    project, env, _ = repro
    shown = run_dvc(project, "metrics", "show", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    files = next(iter(json.loads(shown.stdout).values()))["data"]
    assert files["reports/validation/summary.json"]["data"]["success"] is True
    counts = files["reports/preprocess/class_counts.json"]["data"]
    assert all(
        counts[split][dx] > 0 for split in ("train", "val", "test") for dx in counts["train"]
    )


def test_data_runs_are_in_the_data_experiment_with_lineage(repro):
    project, env, _ = repro
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("skindx-data")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["dvc_stage"] for r in runs) == sorted(DATA_STAGES)
    data_hash = json.loads((project / "data/raw/manifest.json").read_text())["data_hash"]
    for run in runs:
        assert run.data.tags["data_hash"] == data_hash
        assert run.data.tags["profile"] == "quick"
        assert run.data.tags["git_commit"] not in ("", "unknown")
        assert run.info.status == "FINISHED"
    by_stage = {r.data.tags["dvc_stage"]: r for r in runs}
    assert by_stage["validate"].data.metrics["success"] == 1.0
    assert by_stage["ingest"].data.metrics["n_images"] > 0
    assert by_stage["preprocess"].data.metrics["n_train"] > 0
    model_experiment = client.get_experiment_by_name("skindx")
    assert model_experiment is None or not client.search_runs([model_experiment.experiment_id])


def test_seed_experiment_changes_the_split(repro):
    project, env, _ = repro
    before = pd.read_csv(project / "data/processed/splits/test.csv")["image_id"]
    result = run_dvc(
        project,
        "exp",
        "run",
        "-S",
        "experiment=quick",
        "-S",
        "data.split.seed=7",
        "preprocess",
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Running stage 'preprocess'" in result.stdout
    assert "Running stage 'ingest'" not in result.stdout
    after = pd.read_csv(project / "data/processed/splits/test.csv")["image_id"]
    assert set(before) != set(after)
    shown = run_dvc(project, "exp", "show", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert {42, 7} <= set(split_seeds(json.loads(shown.stdout)))  # baseline and experiment


def split_seeds(node):
    """Every data.split.seed in `dvc exp show --json` output, wherever DVC nests it."""
    if isinstance(node, list):
        for item in node:
            yield from split_seeds(item)
    elif isinstance(node, dict):
        params = node.get("params", {}).get("params.yaml", {}).get("data", {})
        if "data" in params:
            yield params["data"]["split"]["seed"]
        for value in node.values():
            yield from split_seeds(value)
