"""The evaluate and package stages' options of the better-model issue, in the real quick
pipeline: `evaluate.tta` (the 8-view gain in metrics.json and MLflow) and `package.int8` (the
candidate becomes the int8 package when it keeps test balanced accuracy, and stays fp32 with the
reason in reports/quantization.json when it does not). Each on a copy of the session's run."""

from __future__ import annotations

import json

import pytest
import yaml

from skindx.inference.model import load_packaged_model
from tests.conftest import run_dvc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # after the session's quick run


def _set(project, **sections) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in sections.items():
        for key, value in values.items():
            node = params[section]
            *parents, leaf = key.split(".")
            for name in parents:
                node = node[name]
            node[leaf] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _repro(project, env) -> str:
    result = run_dvc(project, "repro", env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def test_evaluate_tta_and_an_accepted_int8_candidate(quick_project, tmp_path):
    import mlflow

    copy = quick_project.copy_to(tmp_path / "p")
    project = copy.path
    before = json.loads((project / "reports/quantization.json").read_text())
    assert before == {"enabled": False, "served": "fp32"}  # the default run: off, and says so
    plain = json.loads((project / "reports/metrics.json").read_text())
    assert "tta" not in plain

    _set(
        project,
        evaluate={"tta": True},
        package={"int8.enabled": True, "int8.max_bma_drop": 1.0, "int8.calibration_images": 16},
    )
    out = _repro(project, copy.env)
    for stage in ("evaluate", "package"):
        assert f"Running stage '{stage}'" in out, stage
    assert "Running stage 'train'" not in out  # neither option retrains
    assert "package: int8 accepted" in out

    metrics = json.loads((project / "reports/metrics.json").read_text())
    tta = metrics["tta"]
    assert tta["views"] == 8 and 0.0 <= tta["balanced_accuracy"] <= 1.0
    assert tta["difference"]["delta"] == pytest.approx(
        tta["balanced_accuracy"] - metrics["balanced_accuracy"], abs=1e-9
    )
    assert metrics["balanced_accuracy"] == plain["balanced_accuracy"]  # headline stays plain

    report = json.loads((project / "reports/quantization.json").read_text())
    assert report["enabled"] is True and report["served"] == "int8"
    model = load_packaged_model(project / "models/candidate")  # sealed, servable
    assert (
        model.card["export"]["quantization"]["balanced_accuracy_int8"]
        == (report["balanced_accuracy_int8"])
    )
    ood = json.loads((project / "reports/ood.json").read_text())
    assert ood["threshold"] == pytest.approx(model.card["ood"]["threshold"])  # the refit scorer
    shown = run_dvc(project, "metrics", "show", "--json", env=copy.env)
    files = next(iter(json.loads(shown.stdout).values()))["data"]
    assert files["reports/quantization.json"]["data"]["served"] == "int8"

    mlflow.set_tracking_uri(copy.env["MLFLOW_TRACKING_URI"])
    run_id = json.loads((project / "models/train/run.json").read_text())["run_id"]
    logged = mlflow.get_run(run_id).data.metrics
    assert logged["test_tta_balanced_accuracy"] == pytest.approx(tta["balanced_accuracy"])
    assert logged["test_tta_balanced_accuracy_delta"] == pytest.approx(tta["difference"]["delta"])


def test_int8_past_the_allowed_drop_keeps_the_fp32_candidate_and_says_why(quick_project, tmp_path):
    copy = quick_project.copy_to(tmp_path / "p")
    project = copy.path
    fp32 = load_packaged_model(project / "models/candidate")
    # a negative allowance: no int8 graph can pass, whatever the model
    _set(project, package={"int8.enabled": True, "int8.max_bma_drop": -1.0})
    out = _repro(project, copy.env)
    assert "package: int8 refused" in out

    report = json.loads((project / "reports/quantization.json").read_text())
    assert report["enabled"] is True and report["served"] == "fp32"
    assert "more than the allowed -1" in report["refused"]
    assert report["balanced_accuracy_drop"] > report["max_balanced_accuracy_drop"]
    model = load_packaged_model(project / "models/candidate")
    assert "quantization" not in model.card["export"]
    assert (
        model.card["export"]["parity"]["max_abs_diff"] <= fp32.card["export"]["parity"]["tolerance"]
    )
    leftovers = [p.name for p in (project / "models").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no staging folder left behind
