"""The promotion rule: candidate vs champion metrics -> a decision and its reason.

Pure functions of numbers and names (no MLflow, no files), so the gate can be read and tested
on its own. `promote` (promotion.py) feeds it the values a champion store reports and, when
both packages carry their test predictions on the same images, a paired bootstrap of the
difference (skindx.evaluation.bootstrap.paired_difference).

The gate, in order:
1. no champion, or a champion without a recorded `metric`: promote;
2. the candidate already is the champion: keep;
3. `force`: promote, whatever the numbers;
4. paired test available: promote only when the lower bound of the `confidence` interval of
   the difference is above 0 (significant) and the observed difference is at least
   `min_delta` (worth a new model);
5. no paired test (the champion's predictions are missing or on other images): the
   documented fallback. If the candidate card has a bootstrap interval for `metric`, promote
   only when its lower bound is above the champion's value and the difference is at least
   `min_delta` (an unpaired, conservative check); a candidate card without intervals (made
   before they existed) is judged on `min_delta` alone. The reason says which rule was used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from skindx.evaluation.bootstrap import PairedDifference
from skindx.inference.metrics import HIGHER_IS_BETTER, flat_metrics
from skindx.registry.errors import RegistryError

# promote.metric must be one of HIGHER_IS_BETTER (skindx.inference.metrics, the one list of
# metric names): `decide` compares them as higher-is-better.
Action = Literal["promoted", "rejected", "kept"]


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    comparison: dict[str, Any] | None = None  # the paired test (or why there is none), logged

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
    paired: PairedDifference | None = None,
    no_pairing: str | None = None,
    candidate_ci_low: float | None = None,
) -> Decision:
    """The gate of the module docstring. `paired`: the paired bootstrap of candidate - champion;
    `no_pairing`: why there is none (said in the reason); `candidate_ci_low`: the lower bound
    of the candidate's own interval for `metric`, for the unpaired fallback."""
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
    if paired is not None:
        return _decide_paired(
            candidate,
            champion,
            paired,
            min_delta=min_delta,
            force=force,
            champion_version=champion_version,
        )
    delta = candidate - champion
    versus = (
        f"candidate {metric} {candidate:.4f} vs champion v{champion_version} {champion:.4f} "
        f"(delta {delta:+.4f}, min_delta {min_delta:g})"
    )
    comparison: dict[str, Any] = {"paired": False, "delta": delta, "why_not_paired": no_pairing}
    note = f"; no paired test: {no_pairing}" if no_pairing else ""
    if force:
        return Decision("promoted", f"forced by promote.force=true: {versus}{note}", comparison)
    if candidate_ci_low is not None:
        comparison.update(rule="unpaired", candidate_ci_low=candidate_ci_low)
        bound = (
            f"candidate's lower bound {candidate_ci_low:.4f} "
            f"{'above' if candidate_ci_low > champion else 'not above'} the champion's "
            f"{champion:.4f}"
        )
        if delta >= min_delta - 1e-12 and candidate_ci_low > champion:
            return Decision(
                "promoted", f"better (unpaired rule: {bound}): {versus}{note}", comparison
            )
        return Decision(
            "rejected", f"not better (unpaired rule: {bound}): {versus}{note}", comparison
        )
    comparison["rule"] = "min_delta"
    if delta >= min_delta - 1e-12:
        return Decision("promoted", f"better: {versus}{note}", comparison)
    return Decision("rejected", f"not better by min_delta: {versus}{note}", comparison)


def _decide_paired(
    candidate: float,
    champion: float,
    paired: PairedDifference,
    *,
    min_delta: float,
    force: bool,
    champion_version: str,
) -> Decision:
    low, high, delta = paired.interval.low, paired.interval.high, paired.delta
    versus = (
        f"candidate {paired.metric} {candidate:.4f} vs champion v{champion_version} "
        f"{champion:.4f}; paired bootstrap on {paired.n_images} test images "
        f"({paired.n_groups} lesions, {paired.n_resamples} resamples): delta {delta:+.4f}, "
        f"{paired.confidence:.0%} CI [{low:+.4f}, {high:+.4f}], one-sided p {paired.p_value:.3g}, "
        f"min_delta {min_delta:g}"
    )
    comparison = {"paired": True, "rule": "paired_bootstrap", **paired.to_dict()}
    if force:
        return Decision("promoted", f"forced by promote.force=true: {versus}", comparison)
    significant = bool(low > 0)
    if significant and delta >= min_delta - 1e-12:
        return Decision("promoted", f"better, significantly: {versus}", comparison)
    why = [] if delta >= min_delta - 1e-12 else ["not better by min_delta"]
    if not significant:
        why.append("not significant (the interval of the difference includes 0)")
    text = " and ".join(why)
    return Decision(
        "rejected",
        f"{'' if why[0].startswith('not better') else 'not better: '}{text}: {versus}",
        comparison,
    )
