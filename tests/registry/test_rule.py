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


def paired(delta, low, high):
    from skindx.evaluation.bootstrap import Interval, PairedDifference

    return PairedDifference(
        "balanced_accuracy", delta, Interval(low, high), 0.2, 0.95, 2000, 500, 200
    )


@pytest.mark.parametrize(
    ("delta", "low", "high", "expected", "words"),
    [
        (0.03, 0.01, 0.05, "promoted", "better, significantly"),
        (0.03, -0.01, 0.07, "rejected", "not better: not significant"),
        (0.003, 0.001, 0.005, "rejected", "not better by min_delta: "),
        (0.0, 0.0, 0.0, "rejected", "not better by min_delta and not significant"),
    ],
)
def test_decide_with_a_paired_test_needs_significance_and_min_delta(
    delta, low, high, expected, words
):
    decision = decide(
        0.5 + delta,
        0.5,
        metric="balanced_accuracy",
        min_delta=0.005,
        force=False,
        champion_version="1",
        candidate_version="2",
        paired=paired(delta, low, high),
    )
    assert decision.action == expected and words in decision.reason
    assert f"95% CI [{low:+.4f}, {high:+.4f}]" in decision.reason
    assert decision.comparison["ci_low"] == low and decision.comparison["delta"] == delta


def test_decide_without_pairing_says_why_and_uses_the_candidates_lower_bound():
    common = {"metric": "balanced_accuracy", "min_delta": 0.005, "force": False}
    why = "champion v1 carries no predictions.csv"
    above = decide(0.6, 0.5, champion_version="1", no_pairing=why, candidate_ci_low=0.52, **common)
    assert above.promote and "unpaired rule" in above.reason and above.reason.endswith(why)
    below = decide(0.6, 0.5, champion_version="1", no_pairing=why, candidate_ci_low=0.45, **common)
    assert below.action == "rejected" and "not above the champion's 0.5000" in below.reason
    assert below.comparison == {
        "paired": False,
        "delta": pytest.approx(0.1),
        "why_not_paired": why,
        "rule": "unpaired",
        "candidate_ci_low": 0.45,
    }
