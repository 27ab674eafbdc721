"""The promotion gate, `decide`: pure, no MLflow (moved from tests/test_registry.py)."""

from __future__ import annotations

import pytest

from skindx.registry import (
    decide,
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


def test_decide_keeps_a_candidate_that_already_is_the_champion():
    decision = decide(
        0.6,
        0.6,
        metric="balanced_accuracy",
        min_delta=0.005,
        force=True,  # even forced: there is nothing to move
        champion_version="3",
        candidate_version="3",
        alias="prod",
    )
    assert decision.action == "kept" and decision.promote is False
    assert decision.reason == "v3 already holds @prod"


def test_decide_names_each_outcome():
    common = {"metric": "macro_f1", "min_delta": 0.01, "force": False}
    first = decide(0.3, None, champion_version=None, **common)
    assert (first.action, first.promote) == ("promoted", True) and "no champion yet" in first.reason
    better = decide(0.5, 0.4, champion_version="1", candidate_version="2", **common)
    assert better.action == "promoted" and better.reason.startswith("better: candidate macro_f1")
    worse = decide(0.405, 0.4, champion_version="1", candidate_version="2", **common)
    assert worse.action == "rejected" and "delta +0.0050, min_delta 0.01" in worse.reason
