"""Queued experiments: `dvc exp run --queue -S …` + `dvc queue start` with the project's Hydra
composition (conf/ recomposed into params.yaml for each experiment), compared in `dvc exp show`,
the better one applied with `dvc exp apply` and promoted with `dvc repro`.

DVC runs a queued experiment in a temporary copy (.dvc/tmp/exps/<tmp>) and sets DVC_ROOT to the
checkout: relative data sources and the relative SQLite store resolve there, so the queued
runs and their registered versions land in the checkout's MLflow store.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from skindx.data.sources import resolve_source
from tests.conftest import VENV_BIN, run_dvc

QUEUE_TIMEOUT_S = 1800  # two quick pipelines one after the other on a shared 2-core machine
METRIC = "balanced_accuracy"
METRICS_FILE = "reports/metrics.json"


def test_relative_data_sources_resolve_against_dvc_root(tmp_path, monkeypatch):
    """In the experiment's temporary copy `../shared/data/ham10000` must mean the checkout's
    neighbour, not .dvc/tmp/exps/shared/…"""
    checkout = tmp_path / "work" / "skindx"
    data = tmp_path / "work" / "shared" / "data" / "ham10000"
    exp_copy = checkout / ".dvc" / "tmp" / "exps" / "tmpxyz"
    data.mkdir(parents=True)
    exp_copy.mkdir(parents=True)
    monkeypatch.chdir(exp_copy)
    params = {"source": None, "default_source": "../shared/data/ham10000"}
    found = resolve_source(params, environ={"DVC_ROOT": str(checkout)})
    assert found.origin == "data.default_source"
    assert found.path.resolve() == data.resolve()
    # without DVC_ROOT (a plain `python pipelines/ingest.py`) the cwd is the root
    assert resolve_source(params, environ={}).origin == "download"


def _experiments(project: Path, env: dict[str, str]) -> dict[str, dict]:
    """name -> {"status", "lr", "metrics"} from `dvc exp show --json`."""
    shown = run_dvc(project, "exp", "show", "--json", env=env, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    found = {}
    for baseline in json.loads(shown.stdout):
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            data = rev.get("data") or {}
            metrics = (data.get("metrics") or {}).get(METRICS_FILE, {}).get("data") or {}
            params = (data.get("params") or {}).get("params.yaml", {}).get("data") or {}
            found[exp.get("name") or rev.get("name")] = {
                "status": data.get("status") or rev.get("status"),
                "lr": (params.get("train") or {}).get("lr"),
                "profile": params.get("profile"),
                "metrics": metrics,
                "error": rev.get("error"),
            }
    return found


def _queue_status(project: Path, env: dict[str, str]) -> str:
    return run_dvc(project, "queue", "status", env=env, timeout=120).stdout


@pytest.mark.slow
@pytest.mark.timeout(QUEUE_TIMEOUT_S + 1800)  # plus the session's quick pipeline and the promote
def test_two_queued_experiments_are_compared_applied_and_promoted(quick_project, tmp_path):
    import mlflow

    project_copy = quick_project.copy_to(tmp_path / "p")
    project, env = project_copy.path, dict(project_copy.env)
    # the baseline a team experiments from is committed, dvc.lock included: an experiment that
    # stops at `package` keeps the baseline's promote entry, which `dvc exp apply` checks out
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "baseline"], cwd=project, check=True)
    # the default relative store (sqlite:///mlflow.db), as a user has it: the queued runs must
    # find the checkout's mlflow.db through DVC_ROOT, not create one in their temporary copy
    env.pop("MLFLOW_TRACKING_URI")
    params = yaml.safe_load((project / "params.yaml").read_text())
    registered = params["package"]["registered_model"]
    alias = params["promote"]["alias"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    # a team's first promotion: no champion yet, so the applied candidate must win the gate
    client.delete_registered_model_alias(registered, alias)
    runs_before = {r.info.run_id for r in client.search_runs([_experiment_id(client, params)])}

    lrs = {"lr-high": 0.003, "lr-low": 0.0003}
    for name, lr in lrs.items():
        # up to `package`: experiments register candidates; promotion is one deliberate step
        queued = run_dvc(
            project,
            "exp",
            "run",
            "--queue",
            "-n",
            name,
            "-S",
            "experiment=quick",
            "-S",
            f"train.lr={lr}",
            "package",
            env=env,
            timeout=300,
        )
        assert queued.returncode == 0, queued.stdout[-2000:] + queued.stderr[-2000:]
    # output to a file: the queue's worker inherits the pipes of `dvc queue start`
    with (tmp_path / "queue-start.log").open("w") as out:
        subprocess.run(
            [str(VENV_BIN / "dvc"), "queue", "start", "-j", "1"],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=True,
        )
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while time.monotonic() < deadline:
        status = _queue_status(project, env)
        rows = [line for line in status.splitlines() if any(n in line for n in lrs)]
        if len(rows) == 2 and all(("Success" in r) or ("Failed" in r) for r in rows):
            break
        time.sleep(10)
    else:
        pytest.fail(f"the queue did not finish in {QUEUE_TIMEOUT_S} s:\n{status}")
    assert all("Success" in r for r in rows), (
        status + run_dvc(project, "queue", "logs", "lr-high", env=env).stdout[-3000:]
    )

    shown = _experiments(project, env)
    assert set(lrs) <= set(shown), shown
    for name, lr in lrs.items():
        assert shown[name]["lr"] == lr  # Hydra recomposed params.yaml with the override
        assert shown[name]["profile"] == "quick"
        assert isinstance(shown[name]["metrics"].get(METRIC), float), shown[name]
    # the experiments logged to the checkout's store (through DVC_ROOT) and left no champion
    new_runs = [
        r
        for r in client.search_runs([_experiment_id(client, params)])
        if r.info.run_id not in runs_before
    ]
    assert sorted(float(r.data.params["train.lr"]) for r in new_runs) == sorted(lrs.values())
    assert {r.data.tags["profile"] for r in new_runs} == {"quick"}
    assert all(f"test_{METRIC}" in r.data.metrics for r in new_runs)
    assert all(r.inputs.dataset_inputs for r in new_runs)  # the splits, as MLflow datasets
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(registered, alias)

    best = max(lrs, key=lambda n: (shown[n]["metrics"][METRIC], n))
    applied = run_dvc(project, "exp", "apply", best, env=env, timeout=300)
    assert applied.returncode == 0, applied.stderr[-2000:]
    metrics = json.loads((project / METRICS_FILE).read_text())
    assert metrics[METRIC] == shown[best]["metrics"][METRIC]
    card = json.loads((project / params["paths"]["candidate_dir"] / "model.json").read_text())
    version = card["registry"]["version"]

    promoted = run_dvc(project, "repro", env=env, timeout=900)
    assert promoted.returncode == 0, promoted.stdout[-3000:] + promoted.stderr[-3000:]
    assert "Running stage 'train'" not in promoted.stdout  # the experiment's outputs were applied
    decision = json.loads(
        (project / params["paths"]["promotions_log"]).read_text().strip().splitlines()[-1]
    )
    assert decision["decision"] == "promoted", decision
    assert str(decision["candidate"]["version"]) == str(version)
    # ModelVersion.version is an int in MLflow 3's client, a str in the card's JSON
    assert str(client.get_model_version_by_alias(registered, alias).version) == str(version)
    serving = json.loads(
        (project / params["paths"]["serving_model_dir"] / "model.json").read_text()
    )
    assert serving["lineage"]["mlflow_run_id"] == card["lineage"]["mlflow_run_id"]


def _experiment_id(client, params: dict) -> str:
    return client.get_experiment_by_name(params["mlflow"]["experiment"]).experiment_id
