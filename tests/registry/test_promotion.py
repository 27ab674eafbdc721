"""promote() against a real MLflow SQLite registry (aliases): decisions, serving/model,
the decision log, refusals (moved from tests/test_registry.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from skindx.config import write_params
from skindx.export.card import write_card
from skindx.inference import verify_package
from skindx.registry import (
    RegistryError,
    decide,
    promote,
)
from tests.registry.conftest import MODEL, REPO, client_of, log_of, promote_in

# each test drives a real MLflow registry (seconds apiece): in `make test`, not test-fast
pytestmark = pytest.mark.slow


def test_first_candidate_is_promoted(store):
    record = promote_in(store, "low")
    assert record["decision"] == "promoted" and "no champion" in record["reason"]
    assert str(client_of(store).get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert verify_package(store[2] / "serving" / "model")["version"] == "1"
    (line,) = log_of(store)
    assert line["champion"] is None and line["candidate"]["version"] == "1"
    assert line["candidate"]["balanced_accuracy"] == 0.5 and line["time"]
    assert client_of(store).get_model_version(MODEL, "1").tags["promotion.decision"] == "promoted"


def test_worse_candidate_is_rejected_and_serving_is_untouched(store):
    promote_in(store, "high")
    serving = store[2] / "serving" / "model"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in serving.iterdir()}
    record = promote_in(store, "low")
    assert record["decision"] == "rejected"
    assert "not better" in record["reason"] and "left unchanged" in record["reason"]
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in serving.iterdir()} == before
    assert str(client_of(store).get_model_version_by_alias(MODEL, "champion").version) == "3"
    first, second = log_of(store)
    assert second["champion"] == {
        "version": "3",
        "run_id": second["champion"]["run_id"],
        "balanced_accuracy": 0.6,
    }
    assert second["candidate"]["balanced_accuracy"] == 0.5
    tags = client_of(store).get_model_version(MODEL, "1").tags
    assert tags["promotion.decision"] == "rejected" and "0.6000" in tags["promotion.reason"]


def test_min_delta_decides(store):
    promote_in(store, "low")
    assert promote_in(store, "slightly_better", min_delta=0.005)["decision"] == "rejected"
    assert promote_in(store, "slightly_better", min_delta=0.001)["decision"] == "promoted"
    assert str(client_of(store).get_model_version_by_alias(MODEL, "champion").version) == "2"


def test_force_promotes_a_worse_candidate(store):
    promote_in(store, "high")
    record = promote_in(store, "low", force=True)
    assert record["decision"] == "promoted" and "promote.force" in record["reason"]
    assert str(client_of(store).get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert verify_package(store[2] / "serving" / "model")["version"] == "1"


def test_rerun_keeps_the_champion(store):
    promote_in(store, "high")
    record = promote_in(store, "high")
    assert record["decision"] == "kept" and "already holds @champion" in record["reason"]


def test_reject_restores_a_missing_serving_model_from_mlflow(store, registered):
    promote_in(store, "high")
    shutil.rmtree(store[2] / "serving" / "model")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(registered[0])  # artifact paths in the store are absolute; reads only
        record = promote_in(store, "low")
    assert record["decision"] == "rejected" and "restored" in record["reason"]
    assert verify_package(store[2] / "serving" / "model")["version"] == "3"


def test_tampered_candidate_is_refused(store, tmp_path):
    packages, params, root = store
    bad = shutil.copytree(packages["high"], tmp_path / "bad")
    (bad / "weights.safetensors").write_bytes(b"tampered")
    with pytest.raises(RegistryError, match="not intact.*weights.safetensors"):
        promote(
            bad,
            registered_model=MODEL,
            serving_dir=root / "serving" / "model",
            log_path=root / "p.jsonl",
            mlflow_params=params,
        )
    assert not (root / "serving").exists()


def test_unregistered_package_is_refused(store, packaged_model_dir):
    with pytest.raises(RegistryError, match="run the package stage first"):
        promote(
            packaged_model_dir,
            registered_model=MODEL,
            mlflow_params=store[1],
            serving_dir=store[2] / "s",
            log_path=store[2] / "p.jsonl",
        )


def test_decide_refuses_a_metric_of_unknown_direction(store):
    with pytest.raises(RegistryError, match="'ece' is not supported"):
        decide(0.1, 0.2, metric="ece", min_delta=0.0, force=False, champion_version="1")
    with pytest.raises(RegistryError, match="higher-is-better"):
        promote_in(store, "high", metric="loss")
    assert not (store[2] / "serving").exists() and not (store[2] / "reports").exists()


def test_unreadable_registry_promotes_nothing(store, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    def locked(self, name, alias):
        raise MlflowException("(sqlite3.OperationalError) database is locked")

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", locked)
    with pytest.raises(RegistryError, match="database is locked"):
        promote_in(store, "high")
    assert not (store[2] / "serving").exists() and not (store[2] / "reports").exists()


def test_failed_alias_move_leaves_serving_untouched(store):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    promote_in(store, "low")
    serving = store[2] / "serving" / "model"
    before = {p.name: p.read_bytes() for p in serving.iterdir()}

    def fail(self, name, alias, version):
        raise MlflowException("database is locked")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MlflowClient, "set_registered_model_alias", fail)
        with pytest.raises(RegistryError, match="could not move @champion.*left unchanged"):
            promote_in(store, "high")
    assert {p.name: p.read_bytes() for p in serving.iterdir()} == before
    assert verify_package(serving)["version"] == "1"
    assert str(client_of(store).get_model_version_by_alias(MODEL, "champion").version) == "1"


def test_candidate_onnx_must_be_the_registered_one(store):
    client_of(store).set_model_version_tag(MODEL, "3", "onnx_sha256", "0" * 64)
    with pytest.raises(
        RegistryError, match="onnx_sha256 .* is not the package registered as skindx-resnet50 v3"
    ):
        promote_in(store, "high")
    assert not (store[2] / "serving").exists()
    assert promote_in(store, "low")["decision"] == "promoted"  # an untampered version still is


def test_candidate_card_must_be_the_registered_one(store):
    """A card edited and sealed again after registration (say, a new temperature) is refused."""
    packages, params, root = store
    edited = shutil.copytree(packages["high"], root / "edited")  # the fixture's stay intact
    card = json.loads((edited / "model.json").read_text())
    card["temperature"] = 0.5
    write_card(card, edited)
    with pytest.raises(RegistryError, match=r"card_sha256 .* is not the package registered"):
        promote_in(({**packages, "edited": edited}, params, root), "edited")
    assert not (root / "serving").exists()


@pytest.mark.slow
def test_promote_stage_reports_instead_of_failing(store):
    """pipelines/promote.py: a rejection exits 0 and says why; a missing candidate exits 1
    with one readable line and no traceback."""
    packages, params, root = store
    promote_in(store, "high")
    shutil.copytree(packages["low"], root / "models" / "candidate")
    write_params(
        {
            "package": {"out_dir": "models/candidate", "registered_model": MODEL},
            "promote": {
                "metric": "balanced_accuracy",
                "min_delta": 0.005,
                "force": False,
                "alias": "champion",
                "serving_dir": "serving/model",
                "log": "reports/promotions.jsonl",
            },
            "mlflow": {"tracking_uri": params["tracking_uri"], "experiment": "skindx"},
        },
        root / "params.yaml",
    )
    env = {**os.environ, "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)

    def promote_stage():
        return subprocess.run(
            [sys.executable, str(REPO / "pipelines" / "promote.py")],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    run = promote_stage()
    assert run.returncode == 0, run.stderr
    assert "REJECTED" in run.stdout and "not better" in run.stdout
    assert len(log_of(store)) == 2
    shutil.rmtree(root / "models" / "candidate")
    run = promote_stage()
    assert run.returncode == 1 and "promote: error:" in run.stderr
    assert "Traceback" not in run.stderr
