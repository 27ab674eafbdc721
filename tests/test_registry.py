"""Registration and promotion against a real MLflow SQLite registry in a temp dir (aliases)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skindx.config import write_params
from skindx.export.card import write_card
from skindx.inference import verify_package
from skindx.registry import (
    RegistryError,
    decide,
    promote,
    register_package,
    registry_champion,
)

MODEL = "skindx-resnet50"
SCORES = {"low": 0.500, "slightly_better": 0.502, "high": 0.600}  # test balanced accuracy
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def registered(packaged_model_dir, tmp_path_factory):
    """A store with three registered versions (v1 low, v2 slightly_better, v3 high), no alias."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    packages = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow puts run artifacts under ./mlruns
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        for name, score in SCORES.items():
            pkg = shutil.copytree(packaged_model_dir, root / name)
            card = json.loads((pkg / "model.json").read_text())
            card["metrics"] = {
                "balanced_accuracy": score,
                "accuracy": 0.7,
                "per_class": {"mel": {"recall": 0.4}},
            }
            write_card(card, pkg)
            packages[name] = (
                pkg,
                register_package(pkg, MODEL, mlflow_params={"tracking_uri": uri}),
            )
    return root, packages


@pytest.fixture
def store(registered, tmp_path, monkeypatch):
    """A fresh copy of the registry (no champion yet) for one test."""
    root, packages = registered
    shutil.copyfile(root / "mlflow.db", tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    return {name: pkg for name, (pkg, _) in packages.items()}, params, tmp_path


def _promote(store, name, **kwargs):
    packages, params, root = store
    return promote(
        packages[name],
        registered_model=MODEL,
        serving_dir=root / "serving" / "model",
        log_path=root / "reports" / "promotions.jsonl",
        mlflow_params=params,
        **kwargs,
    )


def _client(store):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store[1]["tracking_uri"])


def _log(store):
    return [
        json.loads(line)
        for line in (store[2] / "reports" / "promotions.jsonl").read_text().splitlines()
    ]


def test_register_tags_metrics_signature_and_stores_the_package(registered):
    import mlflow
    from mlflow import MlflowClient

    root, packages = registered
    pkg, reg = packages["high"]
    assert reg.version == "3"
    card = json.loads((pkg / "model.json").read_text())
    assert card["version"] == "3" and card["registry"]["model_uri"] == f"models:/{MODEL}/3"
    verify_package(pkg)  # rewriting the card kept every file hash valid
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    version = client.get_model_version(MODEL, "3")
    assert float(version.tags["metric.balanced_accuracy"]) == pytest.approx(0.6)
    assert float(version.tags["metric.per_class.mel.recall"]) == pytest.approx(0.4)
    assert version.tags["onnx_sha256"] == card["files"]["model.onnx"]
    assert version.tags["card_sha256"] == card["card_sha256"]  # the card as sealed, v3 in it
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    info = mlflow.models.get_model_info(f"models:/{MODEL}/3")
    inputs = info.signature.inputs.to_dict()
    assert inputs[0]["name"] == "input" and list(inputs[0]["tensor-spec"]["shape"]) == [
        -1,
        3,
        32,
        32,
    ]
    assert [o["name"] for o in info.signature.outputs.to_dict()] == ["logits", "features"]
    artifacts = client.list_artifacts(reg.run_id, "packages/v3")
    assert {Path(a.path).name for a in artifacts} == {
        "model.json",
        "model.onnx",
        "weights.safetensors",
        "cam_head.npy",
    }


def test_first_candidate_is_promoted(store):
    record = _promote(store, "low")
    assert record["decision"] == "promoted" and "no champion" in record["reason"]
    assert str(_client(store).get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert verify_package(store[2] / "serving" / "model")["version"] == "1"
    (line,) = _log(store)
    assert line["champion"] is None and line["candidate"]["version"] == "1"
    assert line["candidate"]["balanced_accuracy"] == 0.5 and line["time"]
    assert _client(store).get_model_version(MODEL, "1").tags["promotion.decision"] == "promoted"


def test_worse_candidate_is_rejected_and_serving_is_untouched(store):
    _promote(store, "high")
    serving = store[2] / "serving" / "model"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in serving.iterdir()}
    record = _promote(store, "low")
    assert record["decision"] == "rejected"
    assert "not better" in record["reason"] and "left unchanged" in record["reason"]
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in serving.iterdir()} == before
    assert str(_client(store).get_model_version_by_alias(MODEL, "champion").version) == "3"
    first, second = _log(store)
    assert second["champion"] == {
        "version": "3",
        "run_id": second["champion"]["run_id"],
        "balanced_accuracy": 0.6,
    }
    assert second["candidate"]["balanced_accuracy"] == 0.5
    tags = _client(store).get_model_version(MODEL, "1").tags
    assert tags["promotion.decision"] == "rejected" and "0.6000" in tags["promotion.reason"]


def test_min_delta_decides(store):
    _promote(store, "low")
    assert _promote(store, "slightly_better", min_delta=0.005)["decision"] == "rejected"
    assert _promote(store, "slightly_better", min_delta=0.001)["decision"] == "promoted"
    assert str(_client(store).get_model_version_by_alias(MODEL, "champion").version) == "2"


def test_force_promotes_a_worse_candidate(store):
    _promote(store, "high")
    record = _promote(store, "low", force=True)
    assert record["decision"] == "promoted" and "promote.force" in record["reason"]
    assert str(_client(store).get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert verify_package(store[2] / "serving" / "model")["version"] == "1"


def test_rerun_keeps_the_champion(store):
    _promote(store, "high")
    record = _promote(store, "high")
    assert record["decision"] == "kept" and "already holds @champion" in record["reason"]


def test_reject_restores_a_missing_serving_model_from_mlflow(store, registered):
    _promote(store, "high")
    shutil.rmtree(store[2] / "serving" / "model")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(registered[0])  # artifact paths in the store are absolute; reads only
        record = _promote(store, "low")
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


@pytest.mark.parametrize(
    ("candidate", "champion", "force", "expected"),
    [
        (0.50, None, False, True),  # champion without a recorded metric
        (0.407, 0.402, False, True),  # min_delta up to float error (0.00499999...)
        (0.505, 0.50, False, True),  # min_delta plus float error (0.00500000...04)
        (0.4069, 0.402, False, False),
        (0.504, 0.50, False, False),
        (0.40, 0.50, True, True),
    ],
)
def test_decide(candidate, champion, force, expected):
    decision = decide(
        candidate,
        champion,
        metric="balanced_accuracy",
        min_delta=0.005,
        force=force,
        champion_version="4",
    )
    assert decision.promote is expected and "balanced_accuracy" in decision.reason


def test_decide_refuses_a_metric_of_unknown_direction(store):
    with pytest.raises(RegistryError, match="'ece' is not supported"):
        decide(0.1, 0.2, metric="ece", min_delta=0.0, force=False, champion_version="1")
    with pytest.raises(RegistryError, match="higher-is-better"):
        _promote(store, "high", metric="loss")
    assert not (store[2] / "serving").exists() and not (store[2] / "reports").exists()


def test_registry_champion_none_only_when_there_is_none(store):
    from mlflow.exceptions import MlflowException

    client = _client(store)
    assert registry_champion(client, MODEL, "champion", "balanced_accuracy") is None  # no alias
    assert registry_champion(client, "no-such-model", "champion", "balanced_accuracy") is None

    class LockedClient:
        def get_model_version_by_alias(self, name, alias):
            raise MlflowException("(sqlite3.OperationalError) database is locked")

    with pytest.raises(RegistryError, match="cannot read @champion.*database is locked"):
        registry_champion(LockedClient(), MODEL, "champion", "balanced_accuracy")


def test_unreadable_registry_promotes_nothing(store, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    def locked(self, name, alias):
        raise MlflowException("(sqlite3.OperationalError) database is locked")

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", locked)
    with pytest.raises(RegistryError, match="database is locked"):
        _promote(store, "high")
    assert not (store[2] / "serving").exists() and not (store[2] / "reports").exists()


def test_failed_alias_move_leaves_serving_untouched(store):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    _promote(store, "low")
    serving = store[2] / "serving" / "model"
    before = {p.name: p.read_bytes() for p in serving.iterdir()}

    def fail(self, name, alias, version):
        raise MlflowException("database is locked")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MlflowClient, "set_registered_model_alias", fail)
        with pytest.raises(RegistryError, match="could not move @champion.*left unchanged"):
            _promote(store, "high")
    assert {p.name: p.read_bytes() for p in serving.iterdir()} == before
    assert verify_package(serving)["version"] == "1"
    assert str(_client(store).get_model_version_by_alias(MODEL, "champion").version) == "1"


def test_candidate_onnx_must_be_the_registered_one(store):
    _client(store).set_model_version_tag(MODEL, "3", "onnx_sha256", "0" * 64)
    with pytest.raises(
        RegistryError, match="onnx_sha256 .* is not the package registered as skindx-resnet50 v3"
    ):
        _promote(store, "high")
    assert not (store[2] / "serving").exists()
    assert _promote(store, "low")["decision"] == "promoted"  # an untampered version still is


def test_candidate_card_must_be_the_registered_one(store):
    """A card edited and sealed again after registration (say, a new temperature) is refused."""
    packages, params, root = store
    edited = shutil.copytree(packages["high"], root / "edited")  # the fixture's stay intact
    card = json.loads((edited / "model.json").read_text())
    card["temperature"] = 0.5
    write_card(card, edited)
    with pytest.raises(RegistryError, match=r"card_sha256 .* is not the package registered"):
        _promote(({**packages, "edited": edited}, params, root), "edited")
    assert not (root / "serving").exists()


def test_lineage_names_the_run_actually_used(store, tmp_path):
    packages, params, root = store
    pkg = shutil.copytree(packages["low"], tmp_path / "again")
    missing = "0" * 32
    card = json.loads((pkg / "model.json").read_text())
    card["lineage"]["mlflow_run_id"] = missing
    write_card(card, pkg)
    reg = register_package(pkg, MODEL, run_id=missing, mlflow_params=params)
    card = json.loads((pkg / "model.json").read_text())
    assert reg.run_id != missing
    assert card["lineage"]["mlflow_run_id"] == reg.run_id == card["registry"]["run_id"]


@pytest.mark.slow
def test_promote_stage_reports_instead_of_failing(store):
    """pipelines/promote.py: a rejection exits 0 and says why; a missing candidate exits 1
    with one readable line and no traceback."""
    packages, params, root = store
    _promote(store, "high")
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
    run = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "promote.py")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "REJECTED" in run.stdout and "not better" in run.stdout
    assert len(_log(store)) == 2
    shutil.rmtree(root / "models" / "candidate")
    run = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "promote.py")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1 and "promote: error:" in run.stderr
    assert "Traceback" not in run.stderr


def test_without_tracking_the_serving_model_is_the_champion(
    packaged_model_dir, tmp_path, monkeypatch
):
    """SKINDX_TRACKING=off: no registry; the candidate is compared with serving/model's card."""
    monkeypatch.setenv("SKINDX_TRACKING", "off")
    packages = {}
    for name, score in SCORES.items():
        pkg = shutil.copytree(packaged_model_dir, tmp_path / name)
        card = json.loads((pkg / "model.json").read_text())
        card.update(version=name, metrics={"balanced_accuracy": score})
        write_card(card, pkg)
        packages[name] = pkg
    serving, log = tmp_path / "serving", tmp_path / "promotions.jsonl"

    def run(name):
        return promote(packages[name], registered_model=MODEL, serving_dir=serving, log_path=log)

    assert run("slightly_better")["decision"] == "promoted"
    record = run("low")
    assert record["decision"] == "rejected" and record["champion"]["version"] == "slightly_better"
    assert run("high")["decision"] == "promoted"
    assert verify_package(serving)["version"] == "high"
    assert not (tmp_path / "mlflow.db").exists() and len(log.read_text().splitlines()) == 3
