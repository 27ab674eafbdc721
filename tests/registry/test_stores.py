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
