"""The spread of test metrics across runs (e.g. seeds): mean, sample standard deviation, min and
max of each headline metric over several metrics.json files.

    python -m skindx.evaluation.spread runs/seed-*/metrics.json [--json spread.json]

A bootstrap interval measures the test split's sampling noise for one trained model; the spread
across seeds measures how much retraining moves the figures. The README's headline figures
need both.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from skindx.inference.metrics import METRIC_LABELS, QUALITY_METRICS


def spread(runs: Sequence[dict[str, Any]], names: Sequence[str] = QUALITY_METRICS) -> dict:
    """{metric: {n, mean, std, min, max}} over the runs that report a finite value."""
    out: dict[str, dict[str, float | int]] = {}
    for name in names:
        summary = _summary([run.get(name) for run in runs])
        if summary is not None:
            out[name] = summary
    return out


def per_class_recall_spread(runs: Sequence[dict[str, Any]]) -> dict:
    """{class code: {n, mean, std, min, max}} of each class's test recall (metrics.json's
    `per_class`): which classes a change of recipe moves, beside the headline."""
    codes = dict.fromkeys(code for run in runs for code in run.get("per_class", {}))
    out = {}
    for code in codes:
        summary = _summary([run.get("per_class", {}).get(code, {}).get("recall") for run in runs])
        if summary is not None:
            out[code] = summary
    return out


def _summary(raw: Sequence[Any]) -> dict[str, float | int] | None:
    values = [float(v) for v in raw if isinstance(v, int | float) and math.isfinite(v)]
    if not values:
        return None
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else float("nan"),
        "min": min(values),
        "max": max(values),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics.json of each run")
    parser.add_argument("--json", type=Path, help="also write the spread as JSON here")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.metrics if not p.is_file()]
    if missing:
        print(f"spread: error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 1
    if len(args.metrics) < 2:
        print("spread: error: give the metrics.json of at least two runs", file=sys.stderr)
        return 1
    runs = [json.loads(p.read_text()) for p in args.metrics]
    result = spread(runs)
    recalls = per_class_recall_spread(runs)
    for name, s in result.items():
        print(
            f"{METRIC_LABELS[name]}: mean {s['mean']:.3f}, sd {s['std']:.3f}, "
            f"range {s['min']:.3f}-{s['max']:.3f} over {s['n']} runs"
        )
    if recalls:
        print(
            "Recall by class (mean): "
            + ", ".join(f"{c} {s['mean']:.2f}" for c, s in recalls.items())
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "runs": [str(p) for p in args.metrics],
            "spread": result,
            "per_class_recall": recalls,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
