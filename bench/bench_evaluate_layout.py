"""The evaluate stage's torch scoring in the two memory formats: skindx.models.predict.predict_logits
over uint8 images at the `demo` contract's 64 px with a 7-class ResNet-50, the default
contiguous (NCHW) layout against channels_last (NHWC), which evaluate now uses when the
checkpoint trained in it (train.channels_last, on by default). Writes
bench/results/evaluate_layout.json.

    python bench/bench_evaluate_layout.py                 # ~2 min on 2 cores
    python bench/bench_evaluate_layout.py --images 1503 --rounds 3   # one split's pass

The two layouts alternate in `--rounds` rounds (a change in the machine's load hits both), each
round scores the same random images once per layout after one untimed batch; the JSON has each
round's images/s, their paired ratio (NHWC / NCHW), its median, the largest difference of the
logits between the layouts, and the load average at the start. With `evaluate.tta` the stage
scores 8 views of validation and test, so the ratio applies to most of its time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from bench_serving import ROOT, load_average, report_header, write_report

from skindx.inference import CLASS_CODES, PreprocessingContract
from skindx.models import build_model
from skindx.models.predict import predict_logits
from skindx.runtime import configure_runtime

LAYOUTS = ("nchw", "nhwc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=512, help="images per layout per round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/evaluate_layout.json")
    args = parser.parse_args()
    configure_runtime(torch.device("cpu"))  # the thread count training uses
    torch.manual_seed(0)
    contract = PreprocessingContract(input_size=args.size)
    images = np.random.default_rng(0).integers(
        0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8
    )
    nchw = build_model(args.arch, num_classes=len(CLASS_CODES), weights="none").eval()
    nhwc = build_model(args.arch, num_classes=len(CLASS_CODES), weights="none").eval()
    nhwc.load_state_dict(nchw.state_dict())
    nhwc.to(memory_format=torch.channels_last)
    models = {"nchw": (nchw, False), "nhwc": (nhwc, True)}

    def score(layout: str, batch: np.ndarray) -> np.ndarray:
        model, channels_last = models[layout]
        return predict_logits(model, batch, contract, args.batch_size, channels_last=channels_last)

    load_at_start = load_average()
    for layout in LAYOUTS:  # warm-up: oneDNN picks and caches its kernels on first use
        score(layout, images[: args.batch_size])
    rounds, logits = [], {}
    for index in range(args.rounds):
        row = {}
        for layout in LAYOUTS if index % 2 == 0 else reversed(LAYOUTS):
            started = time.perf_counter()
            logits[layout] = score(layout, images)
            row[f"{layout}_images_per_s"] = round(args.images / (time.perf_counter() - started), 1)
        row["ratio_nhwc_over_nchw"] = round(row["nhwc_images_per_s"] / row["nchw_images_per_s"], 3)
        rounds.append(row)
        print(f"round {index + 1}: {row}", flush=True)
    report = {
        **report_header("evaluate_layout", http=False),
        "arch": args.arch,
        "size": args.size,
        "images": args.images,
        "batch_size": args.batch_size,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_at_start": load_at_start,
        "rounds": rounds,
        "median_ratio_nhwc_over_nchw": statistics.median(r["ratio_nhwc_over_nchw"] for r in rounds),
        "max_abs_logit_difference": float(np.abs(logits["nhwc"] - logits["nchw"]).max()),
    }
    write_report(args.out, report)
    print(
        f"NHWC / NCHW: {report['median_ratio_nhwc_over_nchw']:.2f}x (median of {args.rounds}); "
        f"wrote {args.out}"
    )


if __name__ == "__main__":
    main()
