"""Decoding cost of an upload under the contract with and without `jpeg_draft` (libjpeg's
DCT-domain scaling, PIL Image.draft): the step of every API request before the model runs
(sniff, decode, orientation, crop and resize, colour constancy), on real full-resolution JPEGs.

    python bench/bench_decode.py                     # serving/model's contract, writes bench/results/decode.json
    python bench/bench_decode.py --model-dir models/candidate --rounds 7
    python bench/bench_decode.py --size 224          # a contract of that size instead of a model's

Both variants run in this process in interleaved rounds (full, draft, draft, full, ...), every
image once per round, so a shared CPU's drift falls on both; reports each round's median per
image, the paired ratio (full / draft) of each round and their median, and how far the draft's
model inputs are from the full decode's (mean and max absolute uint8 difference).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from bench_serving import DEFAULT_IMAGES, ROOT, load_average, write_report

from skindx.inference.images import decode_image
from skindx.inference.model import load_packaged_model
from skindx.inference.preprocessing import PreprocessingContract, resize_to_contract


def model_input(data: bytes, contract: PreprocessingContract) -> np.ndarray:
    """What serving.uploads.decode computes for /predict (one decode under the contract)."""
    return resize_to_contract(decode_image(data, contract=contract).image, contract)


def one_round(images: list[bytes], contract: PreprocessingContract) -> float:
    """Median seconds per image over one pass."""
    times = []
    for data in images:
        started = time.perf_counter()
        model_input(data, contract)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "serving" / "model")
    parser.add_argument(
        "--size", type=int, default=None, help="contract size; overrides the model's"
    )
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "decode.json")
    args = parser.parse_args()

    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        raise SystemExit(f"no JPEG images in {args.images}: pass --images DIR")
    images = [p.read_bytes() for p in paths]
    if args.size is not None:
        contract, source = PreprocessingContract(input_size=args.size), f"--size {args.size}"
    elif (args.model_dir / "model.json").is_file():
        contract, source = load_packaged_model(args.model_dir).contract, str(args.model_dir)
    else:
        raise SystemExit(f"no packaged model in {args.model_dir}: pass --model-dir DIR or --size N")
    variants = {
        "full": dataclasses.replace(contract, jpeg_draft=False),
        "draft": dataclasses.replace(contract, jpeg_draft=True),
    }

    load_at_start = load_average()
    for variant in variants.values():  # warm-up: page cache, PIL's plugins, numpy
        one_round(images[:5], variant)
    rounds: list[dict[str, float]] = []
    for index in range(args.rounds):
        order = ("full", "draft") if index % 2 == 0 else ("draft", "full")
        rounds.append({name: one_round(images, variants[name]) for name in order})
    ratios = [r["full"] / r["draft"] for r in rounds]

    differences = [
        np.abs(
            model_input(data, variants["full"]).astype(np.int16)
            - model_input(data, variants["draft"]).astype(np.int16)
        )
        for data in images
    ]
    first = decode_image(images[0], contract=variants["draft"])
    report = {
        "benchmark": "decode",
        "what": "median ms per upload of decode_image + resize_to_contract, full decode vs "
        "jpeg_draft, in this process",
        "contract_from": source,
        "input_size": contract.input_size,
        "color_constancy": contract.color_constancy,
        "images": {"dir": str(args.images), "count": len(images)},
        "stored_size_first": list(first.source_size),
        "draft_decoded_size_first": list(first.image.size),
        "median_ms": {
            name: round(statistics.median(r[name] for r in rounds) * 1000, 3) for name in variants
        },
        "ratio_full_over_draft": round(statistics.median(ratios), 2),
        "ratio_per_round": [round(r, 2) for r in ratios],
        "ratio_worst_round": round(min(ratios), 2),
        "rounds": [{k: round(v * 1000, 3) for k, v in r.items()} for r in rounds],
        "pixel_difference": {
            "mean_abs": round(float(np.mean([d.mean() for d in differences])), 3),
            "max_abs": int(max(d.max() for d in differences)),
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_at_start": load_at_start,
        },
    }
    write_report(args.out, report)
    print(
        f"decode + resize at {contract.input_size} px: full {report['median_ms']['full']} ms, "
        f"draft {report['median_ms']['draft']} ms per image, x{report['ratio_full_over_draft']} "
        f"(worst round x{report['ratio_worst_round']}); pixels differ by "
        f"{report['pixel_difference']['mean_abs']} on average; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
