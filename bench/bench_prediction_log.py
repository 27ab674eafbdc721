"""Prediction-log overhead: the API with SKINDX_PREDICTION_LOG on (SQLite in WAL mode, the
default store; uploads not stored, the default) against the same API with it off, on the same
model and real full-resolution images, in interleaved rounds (on, off, off, on, ...).

    python bench/bench_prediction_log.py                       # serving/model
    python bench/bench_prediction_log.py --untrained resnet50  # no promoted model: an untrained
                                                               # ResNet-50 package (same compute)

Measures p50 at one client and throughput at 16 clients (bench/loadgen.py, as
bench/bench_serving.py does) and reports each round's paired ratio and their median, against
the target: logging costs at most 10 % (p50 ratio <= 1.10, throughput ratio >= 0.90). Then it
checks that the logged server's database holds one row per answered request. Writes
bench/results/prediction_log.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import httpx
from bench_serving import (
    DEFAULT_IMAGES,
    ROOT,
    ab_report,
    ab_rounds,
    api_pair,
    load_average,
    read_inputs,
)

TARGETS = {"p50_ratio_1_client_max": 1.10, "throughput_ratio_16_clients_min": 0.90}


def untrained_package(arch: str, out: Path) -> Path:
    """A servable package of an untrained `arch` at 224 px: the promoted model's compute."""
    import torch

    from skindx.export.package import build_package
    from skindx.inference import PreprocessingContract
    from skindx.models import build_model

    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, weights="none").eval()
    return build_package(
        model, PreprocessingContract(input_size=224), out, version=f"untrained-{arch}"
    )


def log_counters(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("skindx_prediction_log_") and s.name.endswith("_total")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "serving" / "model")
    parser.add_argument("--untrained", metavar="ARCH", help="benchmark an untrained ARCH package")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--requests", type=int, default=300, help="requests at N clients")
    parser.add_argument("--requests-single", type=int, default=100, help="requests at 1 client")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "prediction_log.json"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="skindx-bench-log-"))
    model_dir = (
        untrained_package(args.untrained, work / "model") if args.untrained else args.model_dir
    ).resolve()
    images, card = read_inputs(model_dir, args.images)

    database = work / "predictions.db"
    base_env = dict(os.environ, SKINDX_MODEL_DIR=str(model_dir), SKINDX_LOG_LEVEL="warning")
    envs = {
        "log_on": dict(
            base_env, SKINDX_PREDICTION_LOG="true", SKINDX_PREDICTION_DB=f"sqlite:///{database}"
        ),
        "log_off": dict(base_env, SKINDX_PREDICTION_LOG="false", SKINDX_RUN_DIR=str(work / "off")),
    }
    many = f"{args.concurrency}_clients"
    load_at_start = load_average()
    with api_pair(envs, images, args.warmup) as urls:
        on_url = urls["log_on"]
        sent = args.warmup
        rounds = ab_rounds(
            urls,
            images,
            rounds=args.rounds,
            requests_single=args.requests_single,
            requests=args.requests,
            concurrency=args.concurrency,
        )
        sent += args.rounds * (args.requests_single + args.requests)
        time.sleep(1.0)  # the writer flushes within 50 ms of the last record
        counters = log_counters(on_url)
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT count(*) FROM predictions").fetchone()[0]

    report, _, ratios, errors = ab_report(
        "prediction_log", card, args.images, len(images), ("log_on", "log_off"), rounds,
        args.concurrency, load_at_start,
    )  # fmt: skip
    if args.untrained:
        report["model"]["arch"] = report["model"]["arch"] or args.untrained
    met = {
        "p50_ratio_1_client": ratios["p50_ratio_1_client"] is not None
        and ratios["p50_ratio_1_client"] <= TARGETS["p50_ratio_1_client_max"],
        f"throughput_ratio_{many}": ratios[f"throughput_ratio_{many}"] is not None
        and ratios[f"throughput_ratio_{many}"] >= TARGETS["throughput_ratio_16_clients_min"],
        "every_request_logged": rows == sent,
        "errors": errors == 0,
    }
    report.update(
        store="SQLite (WAL), uploads not stored",
        requests_to_logged_server=sent,
        rows_in_log=rows,
        log_counters=counters,
        targets=TARGETS,
        targets_met=met,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"ratios (on/off): {ratios}; rows {rows} of {sent} requests; met: {met}")


if __name__ == "__main__":
    main()
