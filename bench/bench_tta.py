"""Test-time augmentation's serving cost: the API with SKINDX_TTA=true (each upload's 8
dihedral views, skindx.inference.tta) against the same API with it off, on the same model and
real full-resolution images, in interleaved rounds (bench_serving.ab_rounds).

    python bench/bench_tta.py                        # serving/model, writes bench/results/tta.json
    python bench/bench_tta.py --model-dir models/candidate --rounds 3

Reports p50 at one client and throughput at 16 clients, each round's paired ratio (TTA / plain)
and their median. Its accuracy gain is measured on the test split by
`python -m skindx.evaluation.tta`; the two together choose the default (off).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench_serving import (
    DEFAULT_IMAGES,
    ROOT,
    ab_report,
    ab_rounds,
    api_pair,
    load_average,
    read_inputs,
    write_report,
)

NAMES = ("tta", "plain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "serving" / "model")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--requests", type=int, default=200, help="requests at N clients")
    parser.add_argument("--requests-single", type=int, default=80, help="requests at 1 client")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tta.json")
    args = parser.parse_args()
    model_dir = args.model_dir.resolve()
    images, card = read_inputs(model_dir, args.images)

    work = Path(tempfile.mkdtemp(prefix="skindx-bench-tta-"))
    base = dict(
        os.environ,
        SKINDX_MODEL_DIR=str(model_dir),
        SKINDX_LOG_LEVEL="warning",
        SKINDX_PREDICTION_LOG="false",
        SKINDX_RUN_DIR=str(work),
    )
    envs = {"tta": dict(base, SKINDX_TTA="true"), "plain": dict(base, SKINDX_TTA="false")}
    load_at_start = load_average()
    with api_pair(envs, images, args.warmup) as urls:
        rounds = ab_rounds(
            urls,
            images,
            rounds=args.rounds,
            requests_single=args.requests_single,
            requests=args.requests,
            concurrency=args.concurrency,
        )
    report, _, ratios, errors = ab_report(
        "tta", card, args.images, len(images), NAMES, rounds, args.concurrency, load_at_start
    )
    write_report(args.out, report)
    print(f"ratios (TTA/plain): {ratios}; errors {errors}; wrote {args.out}")


if __name__ == "__main__":
    main()
