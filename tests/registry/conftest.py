"""Registry fixtures: a real MLflow SQLite registry in a temp dir with three registered
versions of one package, and a fresh copy of it per test (moved from tests/test_registry.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from skindx.export.card import write_card
from skindx.registry import promote, register_package

MODEL = "skindx-resnet50"
SCORES = {"low": 0.500, "slightly_better": 0.502, "high": 0.600}  # test balanced accuracy
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def registered(packaged_model_dir, tmp_path_factory):
    """A store with three registered versions (v1 low, v2 slightly_better, v3 high), no alias.

    Session-scoped: registering through MLflow costs seconds, and every test works on its own
    copy of the database (`store`), so the registry modules share one."""
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


def promote_in(store, name, **kwargs):
    """promote() the package `name` of `store` into the store's serving/model and log."""
    packages, params, root = store
    return promote(
        packages[name],
        registered_model=MODEL,
        serving_dir=root / "serving" / "model",
        log_path=root / "reports" / "promotions.jsonl",
        mlflow_params=params,
        **kwargs,
    )


def client_of(store):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store[1]["tracking_uri"])


def log_of(store):
    return [
        json.loads(line)
        for line in (store[2] / "reports" / "promotions.jsonl").read_text().splitlines()
    ]
