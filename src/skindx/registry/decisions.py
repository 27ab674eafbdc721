"""The decision log: one JSON line per promotion decision in reports/promotions.jsonl.

Appended, never rewritten, so the history of the champion survives every run (the promote
stage declares the file `persist: true`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from skindx.export.card import now_iso
from skindx.inference.metrics import flat_metrics
from skindx.registry.rule import Decision


def decision_record(
    *,
    decision: Decision,
    reason: str,
    model: str,
    alias: str,
    metric: str,
    min_delta: float,
    force: bool,
    candidate_version: str,
    candidate_run_id: str | None,
    candidate_value: float,
    candidate_metrics: dict[str, Any],
    champion,  # Champion | None
    serving_dir: str | Path,
    serving_version: str | None,
    registry: str | None,
    comparison: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The log line for one decision (also what `promote` returns). `comparison`: the paired
    test (`delta`, `ci_low`, `ci_high`, `confidence`, `p_value`, ...) or why there was none."""
    return {
        "time": now_iso(),
        "model": model,
        "alias": alias,
        "decision": decision.action,
        "reason": reason,
        "metric": metric,
        "min_delta": min_delta,
        "force": bool(force),
        "candidate": {
            "version": candidate_version,
            "run_id": candidate_run_id,
            metric: candidate_value,
            "metrics": flat_metrics(
                {k: v for k, v in candidate_metrics.items() if not isinstance(v, dict)}
            ),
        },
        "champion": None
        if champion is None
        else {"version": champion.version, "run_id": champion.run_id, metric: champion.value},
        "comparison": comparison,
        "serving_dir": str(serving_dir),
        "serving_version": serving_version,
        "registry": registry,
    }


def append_decision(log_path: str | Path, record: dict[str, Any]) -> None:
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as fh:
        fh.write(json.dumps(record, sort_keys=False, default=str) + "\n")
