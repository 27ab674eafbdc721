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
