"""The whole DVC pipeline, for real: quick profile, real images, real MLflow store, real DVC.

One project copy is built once per session and shared by the tests below, which run in order
(they read what the first `dvc repro` produced).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import make_project_copy, project_env, run_dvc

pytestmark = pytest.mark.slow

STAGES = ["ingest", "validate", "preprocess", "train", "evaluate", "package", "promote"]


@pytest.fixture(scope="module")
def repro(tmp_path_factory, small_source):
    project = make_project_copy(tmp_path_factory.mktemp("pipeline") / "skindx")
    env = project_env(project, small_source)
    result = run_dvc(project, "repro", env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return project, env, result


def test_repro_runs_every_stage_and_ends_with_a_servable_model(repro):
    project, _, result = repro
    for stage in STAGES:
        assert f"Running stage '{stage}'" in result.stdout
    model_dir = project / "serving" / "model"
    for name in ("model.onnx", "model.json"):
        assert (model_dir / name).is_file()
    card = json.loads((model_dir / "model.json").read_text())
    assert card["lineage"]["mlflow_run_id"]
    assert card["lineage"]["data_hash"] == json.loads(
        (project / "data/raw/manifest.json").read_text()
    )["data_hash"]
    decisions = [json.loads(line) for line in (project / "reports/promotions.jsonl").open()]
    assert len(decisions) == 1 and decisions[0]["decision"] == "promoted"


def test_second_repro_is_a_no_op(repro):
    project, env, _ = repro
    again = run_dvc(project, "repro", env=env)
    assert again.returncode == 0, again.stderr
    assert "Running stage" not in again.stdout
    status = run_dvc(project, "status", env=env)
    assert "up to date" in status.stdout.lower(), status.stdout


def test_metrics_and_plots_render(repro):
    project, env, _ = repro
    metrics = run_dvc(project, "metrics", "show", "--json", env=env)
    assert metrics.returncode == 0, metrics.stderr
    shown = json.loads(metrics.stdout)
    files = next(iter(shown.values()))["data"]
    assert "balanced_accuracy" in files["reports/metrics.json"]["data"]
    assert files["reports/validation/summary.json"]["data"]["success"] is True
    plots = run_dvc(project, "plots", "show", "-o", str(project / "plots_html"), env=env)
    assert plots.returncode == 0, plots.stderr
    html = (project / "plots_html" / "index.html").read_text()
    assert "reports/plots/confusion.csv" in html


def test_model_is_registered_with_champion_alias(repro):
    project, env, _ = repro
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias("skindx-resnet50", "champion")
    card = json.loads((project / "serving/model/model.json").read_text())
    assert str(card["version"]) == str(champion.version)
    run = client.get_run(card["lineage"]["mlflow_run_id"])
    # train and evaluate share one run: training curves and test metrics side by side
    assert "val_balanced_accuracy" in run.data.metrics
    assert "test_balanced_accuracy" in run.data.metrics or "balanced_accuracy" in run.data.metrics


def test_experiment_with_a_new_seed_changes_the_split_and_is_listed(repro):
    project, env, _ = repro
    before = (project / "data/processed/splits/test.csv").read_text()
    exp = run_dvc(
        project, "exp", "run", "-S", "experiment=quick", "-S", "data.split.seed=7",
        "preprocess", env=env,
    )
    assert exp.returncode == 0, exp.stdout[-3000:] + exp.stderr[-3000:]
    after = (project / "data/processed/splits/test.csv").read_text()
    assert after != before
    shown = run_dvc(project, "exp", "show", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    seeds = set(_split_seeds(json.loads(shown.stdout)))
    assert {42, 7} <= seeds, f"dvc exp show lists split seeds {seeds}"


def _split_seeds(node):
    """Every data.split.seed value anywhere in `dvc exp show --json` output."""
    if isinstance(node, dict):
        split = node.get("data", {}).get("split") if isinstance(node.get("data"), dict) else None
        if isinstance(split, dict) and "seed" in split:
            yield split["seed"]
        for value in node.values():
            yield from _split_seeds(value)
    elif isinstance(node, list):
        for value in node:
            yield from _split_seeds(value)


def test_worse_experiment_is_not_promoted_and_the_log_says_why(repro):
    """Acceptance (package issue): a retrained candidate that does not beat the champion by
    promote.min_delta is registered but not promoted; serving/model keeps the champion."""
    project, env, _ = repro
    served = json.loads((project / "serving/model/model.json").read_text())["version"]
    exp = run_dvc(
        project,
        "exp",
        "run",
        "-S",
        "experiment=quick",
        "-S",
        "seed=1",
        "-S",
        "promote.min_delta=1.0",
        env=env,
    )
    assert exp.returncode == 0, exp.stdout[-3000:] + exp.stderr[-3000:]
    last = [json.loads(line) for line in (project / "reports/promotions.jsonl").open()][-1]
    assert last["decision"] == "rejected" and "not better by min_delta" in last["reason"]
    assert last["champion"]["version"] == str(served) != last["candidate"]["version"]
    assert json.loads((project / "serving/model/model.json").read_text())["version"] == served
