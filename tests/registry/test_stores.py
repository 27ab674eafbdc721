"""Champion stores: the MLflow registry alias and, with SKINDX_TRACKING=off, serving/model
(moved from tests/test_registry.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from skindx.export.card import write_card
from skindx.inference import verify_package
from skindx.registry import (
    RegistryError,
    promote,
    registry_champion,
)
from tests.registry.conftest import MODEL, SCORES, client_of

# each test drives a real MLflow registry (seconds apiece): in `make test`, not test-fast
pytestmark = pytest.mark.slow


def test_registry_champion_none_only_when_there_is_none(store):
    from mlflow.exceptions import MlflowException

    client = client_of(store)
    assert registry_champion(client, MODEL, "champion", "balanced_accuracy") is None  # no alias
    assert registry_champion(client, "no-such-model", "champion", "balanced_accuracy") is None

    class LockedClient:
        def get_model_version_by_alias(self, name, alias):
            raise MlflowException("(sqlite3.OperationalError) database is locked")

    with pytest.raises(RegistryError, match="cannot read @champion.*database is locked"):
        registry_champion(LockedClient(), MODEL, "champion", "balanced_accuracy")


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


def test_the_store_is_chosen_once_from_skindx_tracking(tmp_path, monkeypatch):
    from skindx.registry import LocalChampionStore, MlflowChampionStore, champion_store

    monkeypatch.setenv("SKINDX_TRACKING", "off")
    local = champion_store(MODEL, alias="champion", serving_dir=tmp_path / "serving")
    assert isinstance(local, LocalChampionStore) and local.uri is None
    assert local.champion("balanced_accuracy") is None  # nothing installed yet
    with pytest.raises(RegistryError, match="no registry to restore it from"):
        local.restore("7", tmp_path / "serving")
    monkeypatch.setenv("SKINDX_TRACKING", "on")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracked = champion_store(
        MODEL, alias="champion", serving_dir=tmp_path / "s", mlflow_params={"tracking_uri": uri}
    )
    assert isinstance(tracked, MlflowChampionStore) and tracked.uri == uri


def test_promote_talks_only_to_the_store_it_is_given(packaged_model_dir, tmp_path):
    """promote() with an injected store: the store's champion decides, make_champion runs
    before the install, and the decision is recorded with the store's uri and note."""
    calls = []

    class Store:
        uri, note = "memory://test", " (test store)"

        def candidate_version(self, card, candidate_dir):
            return "9"

        def champion(self, metric):
            from skindx.registry import Champion

            return Champion("8", 0.1, "run-8")

        def make_champion(self, version):
            calls.append(("make_champion", version, (tmp_path / "serving").exists()))

        def restore(self, version, serving_dir):
            raise AssertionError("a promotion restores nothing")

        def record(self, version, record):
            calls.append(("record", version, record["decision"]))

    record = promote(
        packaged_model_dir,
        registered_model=MODEL,
        serving_dir=tmp_path / "serving",
        log_path=tmp_path / "log.jsonl",
        store=Store(),
    )
    assert record["decision"] == "promoted" and record["reason"].endswith(" (test store)")
    assert record["registry"] == "memory://test" and record["champion"]["version"] == "8"
    assert calls == [("make_champion", "9", False), ("record", "9", "promoted")]
    assert verify_package(tmp_path / "serving")["version"] == "test-1"
