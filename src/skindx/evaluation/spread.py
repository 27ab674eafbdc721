"""The spread of test metrics across runs (e.g. seeds): mean, sample standard deviation, min and
max of each headline metric over several metrics.json files.

    python -m skindx.evaluation.spread runs/seed-*/metrics.json [--json spread.json]
    python -m skindx.evaluation.spread /tmp/seeds/ablation.json   # every row of an ablation run

When every run has a `tta` section (evaluate.tta), the spread of the 8-view scores and of their
paired gain over the plain pass is reported too.

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
    return _recall_spread(
        [{c: m.get("recall") for c, m in run.get("per_class", {}).items()} for run in runs]
    )


def _recall_spread(recalls: Sequence[dict[str, Any]]) -> dict:
    """{class code: summary} over runs given as {class code: recall} each."""
    codes = dict.fromkeys(code for run in recalls for code in run)
    out = {}
    for code in codes:
        summary = _summary([run.get(code) for run in recalls])
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


def tta_spread(runs: Sequence[dict[str, Any]]) -> dict | None:
    """The spread of metrics.json's `tta` sections (evaluate.tta) and of their paired gain in
    balanced accuracy over the plain pass; None unless every run has one."""
    sections = [run.get("tta") for run in runs]
    if not all(isinstance(section, dict) for section in sections):
        return None
    return {
        "spread": spread(sections),
        "delta": _summary([(s.get("difference") or {}).get("delta") for s in sections]),
        "per_class_recall": _recall_spread([s.get("per_class_recall", {}) for s in sections]),
    }


def read_runs(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(name, metrics) of a metrics.json, or of each row of a skindx.training.ablation result
    file (rows that differ only in their seed make a seed spread without copying files)."""
    data = json.loads(path.read_text())
    if "base" in data and all(
        isinstance(r, dict) and "metrics" in r for k, r in data.items() if k != "base"
    ):
        return [(f"{path}:{name}", row["metrics"]) for name, row in data.items() if name != "base"]
    return [(str(path), data)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "metrics", nargs="+", type=Path, help="metrics.json of each run, or ablation results"
    )
    parser.add_argument("--json", type=Path, help="also write the spread as JSON here")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.metrics if not p.is_file()]
    if missing:
        print(f"spread: error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 1
    named = [run for path in args.metrics for run in read_runs(path)]
    if len(named) < 2:
        print("spread: error: give the metrics.json of at least two runs", file=sys.stderr)
        return 1
    runs = [metrics for _, metrics in named]
    result = spread(runs)
    recalls = per_class_recall_spread(runs)
    tta = tta_spread(runs)
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
    if tta is not None:
        for name, s in tta["spread"].items():
            print(
                f"8-view TTA {METRIC_LABELS[name]}: mean {s['mean']:.3f}, sd {s['std']:.3f}, "
                f"range {s['min']:.3f}-{s['max']:.3f}"
            )
        d = tta["delta"]
        print(
            f"TTA gain in balanced accuracy: mean {d['mean']:+.3f}, sd {d['std']:.3f}, "
            f"range {d['min']:+.3f} to {d['max']:+.3f} over {d['n']} runs"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "runs": [name for name, _ in named],
            "spread": result,
            "per_class_recall": recalls,
        }
        if tta is not None:
            payload["tta"] = tta
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
