"""The MLflow store's decision lock: two pipelines promoting into one shared registry decide one
after the other (stores.py, decision_lock), on a real MLflow SQLite registry."""

from __future__ import annotations

import threading

import pytest

from skindx.registry import RegistryError
from skindx.registry.stores import LOCK_SUFFIX, MlflowChampionStore
from tests.registry.conftest import MODEL, client_of, promote_in

# each test drives a real MLflow registry (seconds apiece): in `make test`, not test-fast
pytestmark = pytest.mark.slow

LOCK = f"{MODEL}{LOCK_SUFFIX}"


def registered_names(store) -> set[str]:
    return {m.name for m in client_of(store).search_registered_models()}


def test_the_lock_is_exclusive_and_released(store):
    _, params, _ = store
    first, second = (MlflowChampionStore(MODEL, "champion", params) for _ in range(2))
    with first.decision_lock():
        assert LOCK in registered_names(store)
        with pytest.raises(RegistryError, match="another promote .* has held"):
            with second.decision_lock(wait_s=0.5):
                pass
    assert LOCK not in registered_names(store)  # released: nothing left in the registry
    with second.decision_lock():
        pass
    assert LOCK not in registered_names(store)


def test_a_lock_left_by_a_dead_promote_is_taken_over(store, capsys):
    _, params, _ = store
    client_of(store).create_registered_model(LOCK, tags={"holder": "gone:1"})
    with MlflowChampionStore(MODEL, "champion", params).decision_lock(stale_s=0):
        pass
    assert "taking over" in capsys.readouterr().err
    assert LOCK not in registered_names(store)


def test_promote_reads_the_champion_only_after_a_decision_in_progress(store, monkeypatch):
    """A promote that finds another one deciding waits, then decides against its outcome."""
    _, params, _ = store
    events: list[str] = []
    entered, release = threading.Event(), threading.Event()

    def other_promote():
        with MlflowChampionStore(MODEL, "champion", params).decision_lock():
            entered.set()
            release.wait(30)
            events.append("other decided")

    read = MlflowChampionStore.champion

    def champion(self, metric):
        events.append("champion read")
        return read(self, metric)

    monkeypatch.setattr(MlflowChampionStore, "champion", champion)
    other = threading.Thread(target=other_promote)
    other.start()
    assert entered.wait(30)
    threading.Timer(1.0, release.set).start()
    record = promote_in(store, "high")
    other.join(30)
    assert events == ["other decided", "champion read"]
    assert record["decision"] == "promoted"
    assert LOCK not in registered_names(store)
