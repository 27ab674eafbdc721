"""A real `dvc repro` (quick profile, real images) up to evaluate: `dvc metrics show` and
`dvc plots show` render the train and evaluate outputs without errors."""

from __future__ import annotations

import json

import pytest

from tests.conftest import make_project_copy, project_env, run_dvc


@pytest.mark.slow
def test_dvc_repro_to_evaluate_renders_metrics_and_plots(small_source, tmp_path):
    project = make_project_copy(tmp_path / "project")
    env = {**project_env(project, small_source), "OMP_NUM_THREADS": "1"}
    done = run_dvc(project, "repro", "evaluate", env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    metrics = run_dvc(project, "metrics", "show", "--json", env=env)
    assert metrics.returncode == 0, metrics.stderr
    shown = json.loads(metrics.stdout)
    workspace = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]
    assert 0.0 <= workspace["balanced_accuracy"] <= 1.0 and "per_class" in workspace

    plots = run_dvc(project, "plots", "show", "--json", env=env)
    assert plots.returncode == 0, plots.stderr
    rendered = json.loads(plots.stdout)
    assert not rendered.get("errors"), rendered.get("errors")
    data = rendered["data"]
    for plot_id in ("loss", "validation", "roc", "reliability", "reports/plots/confusion.csv"):
        assert plot_id in data, sorted(data)
    roc = data["roc"][0]["content"]["data"]["values"]
    assert {row["filename"] for row in roc} == {
        f"{c}.csv" for c in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    }
    assert any(item["type"] == "image" for item in data["reports/plots/images/roc.png"])
