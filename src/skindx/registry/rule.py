"""The promotion rule: candidate vs champion metrics -> a decision and its reason.

Pure functions of numbers and names (no MLflow, no files), so the gate can be read and tested
on its own. `promote` (promotion.py) feeds it the values a champion store reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from skindx.inference.metrics import HIGHER_IS_BETTER, flat_metrics
from skindx.registry.errors import RegistryError

# promote.metric must be one of HIGHER_IS_BETTER (skindx.inference.metrics, the one list of
# metric names): `decide` compares them as higher-is-better.
Action = Literal["promoted", "rejected", "kept"]


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str

    @property
    def promote(self) -> bool:
        """True when the candidate must become the champion (alias moved, package installed)."""
        return self.action == "promoted"


def metric_value(metrics: dict[str, Any] | None, name: str) -> float | None:
    """`name` from a metrics dict: top level, or under a `test` section, or dotted."""
    flat = flat_metrics(metrics or {})
    for key in (name, f"test.{name}"):
        if key in flat:
            return flat[key]
    return None


def check_metric(metric: str) -> None:
    if metric not in HIGHER_IS_BETTER:
        raise RegistryError(
            f"promote.metric {metric!r} is not supported: promotion compares higher-is-better "
            f"metrics, one of {', '.join(HIGHER_IS_BETTER)}"
        )


def decide(
    candidate: float,
    champion: float | None,
    *,
    metric: str,
    min_delta: float,
    force: bool,
    champion_version: str | None,
    candidate_version: str | None = None,
    alias: str = "champion",
) -> Decision:
    """Promote when there is no champion, when the champion has no recorded `metric`, when the
    candidate beats it by at least `min_delta` (up to float error), or when `force`d. A
    candidate that already is the champion is "kept"."""
    check_metric(metric)
    if champion_version is None:
        return Decision(
            "promoted", f"no champion yet: candidate {metric} {candidate:.4f} becomes the first"
        )
    if candidate_version is not None and candidate_version == champion_version:
        return Decision("kept", f"v{candidate_version} already holds @{alias}")
    if champion is None:
        return Decision(
            "promoted",
            f"champion v{champion_version} has no recorded {metric}; the candidate replaces it",
        )
    delta = candidate - champion
    versus = (
        f"candidate {metric} {candidate:.4f} vs champion v{champion_version} {champion:.4f} "
        f"(delta {delta:+.4f}, min_delta {min_delta:g})"
    )
    if force:
        return Decision("promoted", f"forced by promote.force=true: {versus}")
    if delta >= min_delta - 1e-12:
        return Decision("promoted", f"better: {versus}")
    return Decision("rejected", f"not better by min_delta: {versus}")
