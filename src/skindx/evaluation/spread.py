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
        values = [
            float(run[name])
            for run in runs
            if isinstance(run.get(name), int | float) and math.isfinite(run[name])
        ]
        if not values:
            continue
        out[name] = {
            "n": len(values),
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else float("nan"),
            "min": min(values),
            "max": max(values),
        }
    return out


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
    result = spread([json.loads(p.read_text()) for p in args.metrics])
    for name, s in result.items():
        print(
            f"{METRIC_LABELS[name]}: mean {s['mean']:.3f}, sd {s['std']:.3f}, "
            f"range {s['min']:.3f}-{s['max']:.3f} over {s['n']} runs"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"runs": [str(p) for p in args.metrics], "spread": result}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
