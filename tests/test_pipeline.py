"""The whole DVC pipeline, for real: quick profile, real images, real MLflow store, real DVC.

The session's `quick_project` (tests/conftest.py) runs `dvc repro` once; the tests below read
what it produced, and the one that runs an experiment works on a copy of it.
"""

from __future__ import annotations

import json
import shutil

import pytest

from skindx.inference import CLASS_CODES
from tests.conftest import run_dvc

pytestmark = pytest.mark.slow

STAGES = ["ingest", "validate", "preprocess", "train", "evaluate", "package", "promote"]


@pytest.fixture(scope="module")
def repro(quick_project):
    return quick_project.path, quick_project.env, quick_project


def test_repro_runs_every_stage_and_ends_with_a_servable_model(repro):
    project, _, result = repro
    for stage in STAGES:
        assert f"Running stage '{stage}'" in result.stdout
    model_dir = project / "serving" / "model"
    for name in ("model.onnx", "model.json"):
        assert (model_dir / name).is_file()
    card = json.loads((model_dir / "model.json").read_text())
    assert card["lineage"]["mlflow_run_id"]
    assert (
        card["lineage"]["data_hash"]
        == json.loads((project / "data/raw/manifest.json").read_text())["data_hash"]
    )
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
    # from tests/evaluation/test_dvc_pipeline_outputs.py (deleted: it repeated this dvc repro)
    workspace = files["reports/metrics.json"]["data"]
    assert 0.0 <= workspace["balanced_accuracy"] <= 1.0 and "per_class" in workspace
    assert files["reports/validation/summary.json"]["data"]["success"] is True
    plots = run_dvc(project, "plots", "show", "--json", env=env)
    assert plots.returncode == 0, plots.stderr
    shown_plots = json.loads(plots.stdout)
    assert not shown_plots.get("errors"), shown_plots.get("errors")
    rendered = shown_plots["data"]
    for plot in ("reports/plots/confusion.csv", "loss", "validation", "roc", "reliability"):
        assert rendered.get(plot), f"dvc plots show rendered nothing for {plot}"
    roc = rendered["roc"][0]["content"]["data"]["values"]
    assert {row["filename"] for row in roc} == {f"{c}.csv" for c in CLASS_CODES}
    assert any(item["type"] == "image" for item in rendered["reports/plots/images/roc.png"])
    html = run_dvc(project, "plots", "show", "-o", str(project / "plots_html"), env=env)
    assert html.returncode == 0, html.stderr
    assert "confusion_csv" in (project / "plots_html" / "index.html").read_text()


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
    assert "test_balanced_accuracy" in run.data.metrics


def test_worse_experiment_is_not_promoted_and_the_log_says_why(quick_project, tmp_path):
    """Acceptance (package and model issues): an experiment with another architecture runs
    through `dvc exp run -S`, `dvc exp show` compares it with the baseline, and a candidate that
    does not beat the champion by promote.min_delta is registered but not promoted.

    The same experiment moves two pipeline paths (structure issue: a path is defined once, in
    conf/paths): the arrays and the candidate land in the new places, and with the old arrays
    deleted no stage can still be reading them."""
    copy = quick_project.copy_to(tmp_path / "skindx")  # the session's run stays untouched
    project, env = copy.path, copy.env
    served = json.loads((project / "serving/model/model.json").read_text())["version"]
    shutil.rmtree(project / "data" / "processed")
    # quick sets model.arch itself, so the architecture is overridden by key, not by group
    overrides = [
        "experiment=quick",
        "model.arch=resnet50",
        "train.epochs=1",
        "promote.min_delta=1.0",
        "paths.processed_dir=data/arrays",
        "paths.candidate_dir=models/candidate-exp",
    ]
    exp = run_dvc(project, "exp", "run", *(f"-S{o}" for o in overrides), env=env)
    assert exp.returncode == 0, exp.stdout[-3000:] + exp.stderr[-3000:]
    for stage in ("preprocess", "train", "evaluate", "package", "promote"):
        assert f"Running stage '{stage}'" in exp.stdout, stage
    assert (project / "data/arrays/train_images.npy").is_file()
    assert not (project / "data/processed").exists()
    candidate = json.loads((project / "models/candidate-exp/model.json").read_text())
    assert candidate["architecture"]["arch"] == "resnet50"
    shown = run_dvc(project, "exp", "show", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    archs = set(_values_of(json.loads(shown.stdout), "arch"))
    assert {"resnet18", "resnet50"} <= archs, f"dvc exp show lists architectures {archs}"
    assert "balanced_accuracy" in shown.stdout
    last = [json.loads(line) for line in (project / "reports/promotions.jsonl").open()][-1]
    assert last["decision"] == "rejected" and "not better by min_delta" in last["reason"]
    assert last["champion"]["version"] == str(served) != last["candidate"]["version"]
    assert json.loads((project / "serving/model/model.json").read_text())["version"] == served


def _values_of(node, key):
    """Every value stored under `key` anywhere in `dvc exp show --json` output."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key and isinstance(value, str):
                yield value
            yield from _values_of(value, key)
    elif isinstance(node, list):
        for value in node:
            yield from _values_of(value, key)
