"""Data-parallel training on this machine: the real train stage (pipelines/train.py) with one
process against two DDP ranks (torchrun, gloo on CPU), the same global batch, model, images and
epochs, in one run. Writes bench/results/ddp.json: seconds per epoch (from the stage's own
history.csv: training plus rank 0's validation), images per second, and the ratio.

The epochs after the first are timed (the first pays for allocator and kernel warm-up). The two
configurations alternate over `--rounds` so that a change in machine load affects both alike;
the load average before and after is recorded, because the figures are only as good as the
machine was idle.

    python bench/bench_ddp.py                       # resnet18, 64 px, global batch 32, CPU
    python bench/bench_ddp.py --nproc 4 --arch resnet50 --size 128
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from skindx.config import compose_config, write_params
from skindx.inference import CLASS_CODES, PreprocessingContract, resize_to_contract
from skindx.inference.resources import cpu_threads

REPO = Path(__file__).resolve().parents[1]
SOURCES = (REPO / "data/raw", REPO.parent / "shared/data/ham10000")


def find_source() -> tuple[Path, list[dict[str, str]]]:
    for root in SOURCES:
        for meta in ("metadata.csv", "HAM10000_metadata.csv"):
            if (root / meta).exists():
                with (root / meta).open() as fh:
                    return root, list(csv.DictReader(fh))
    raise SystemExit(f"no HAM10000 images in {[str(s) for s in SOURCES]}: run `make data` first")


def build_processed(dest: Path, n_train: int, n_val: int, size: int) -> None:
    """A data/processed layout (docs/contracts.md) of real images, round-robin over classes."""
    root, rows = find_source()
    by_class = {c: [r for r in rows if r["dx"] == c] for c in CLASS_CODES}
    contract = PreprocessingContract(input_size=size)
    picked = []
    for i in range(n_train + n_val):
        pool = by_class[CLASS_CODES[i % len(CLASS_CODES)]]
        picked.append(pool[(i // len(CLASS_CODES)) % len(pool)])
    dest.mkdir(parents=True)
    for split, part in (("train", picked[:n_train]), ("val", picked[n_train:])):
        images = []
        for row in part:
            path = root / row.get("path", f"images/{row['image_id']}.jpg")
            if not path.exists():
                path = root / "images" / f"{row['image_id']}.jpg"
            images.append(resize_to_contract(Image.open(path).convert("RGB"), contract))
        np.save(dest / f"{split}_images.npy", np.stack(images))
        labels = [CLASS_CODES.index(r["dx"]) for r in part]
        np.save(dest / f"{split}_labels.npy", np.asarray(labels, np.int64))
    (dest / "class_weights.json").write_text(
        json.dumps({"classes": list(CLASS_CODES), "weights": [1.0] * len(CLASS_CODES)})
    )
    (dest / "info.json").write_text(json.dumps({"contract": contract.to_dict()}))


def run_stage(project: Path, nproc: int, args) -> list[float]:
    overrides = [
        "experiment=quick",
        f"model.arch={args.arch}",
        f"train.batch_size={args.batch}",
        f"train.epochs={args.epochs}",
        f"train.nproc_per_node={nproc}",
        "train.early_stopping_patience=null",
    ]
    params = compose_config(overrides, conf_dir=REPO / "conf")
    params["data"]["image_size"] = args.size
    write_params(params, project / "params.yaml")
    env = {**os.environ, "SKINDX_TRACKING": "off"}
    done = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "train.py")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"train stage with {nproc} process(es) failed:\n{done.stderr[-3000:]}")
    with (project / "reports/train/history.csv").open() as fh:
        return [float(row["seconds"]) for row in csv.DictReader(fh)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="global batch")
    parser.add_argument("--train-images", type=int, default=256)
    parser.add_argument("--val-images", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/ddp.json")
    args = parser.parse_args()

    load_before = os.getloadavg()
    epochs: dict[int, list[float]] = {1: [], args.nproc: []}
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        processed = Path(tmp) / "processed"
        build_processed(processed, args.train_images, args.val_images, args.size)
        for round_ in range(args.rounds):
            for nproc in (1, args.nproc):
                project = Path(tmp) / f"r{round_}-n{nproc}"
                (project / "data").mkdir(parents=True)
                (project / "data/processed").symlink_to(processed)
                seconds = run_stage(project, nproc, args)
                epochs[nproc] += seconds[1:]  # the first epoch is warm-up
                print(f"round {round_ + 1}: {nproc} process(es): {seconds}", flush=True)
    load_after = os.getloadavg()

    steps = args.train_images // args.batch
    per_epoch = {n: statistics.median(s) for n, s in epochs.items()}
    result = {
        "benchmark": "ddp",
        "what": "train stage seconds per epoch (training + rank 0 validation), same global batch",
        "arch": args.arch,
        "image_size": args.size,
        "global_batch": args.batch,
        "train_images": args.train_images,
        "val_images": args.val_images,
        "steps_per_epoch": steps,
        "timed_epochs_per_config": len(epochs[1]),
        "backend": "gloo",
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "usable_cpus": cpu_threads(),
        "threads_per_rank": {"1": cpu_threads(), str(args.nproc): 1},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "seconds_per_epoch": {str(n): round(v, 3) for n, v in per_epoch.items()},
        "all_epoch_seconds": {str(n): [round(x, 3) for x in s] for n, s in epochs.items()},
        "images_per_s": {str(n): round(args.train_images / v, 2) for n, v in per_epoch.items()},
        "speedup": round(per_epoch[1] / per_epoch[args.nproc], 3),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python bench/bench_ddp.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
