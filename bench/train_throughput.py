"""Training throughput: the project's loop against a naive loop, same model, batch and
resolution, in one run. Writes bench/results/train_throughput.json.

naive   : a Dataset over the raw JPEGs that decodes and resizes every image at every step
          (torchvision Resize/CenterCrop/flip/ToTensor/Normalize), default memory format,
          fp32, no tuning: what a first training script looks like.
project : skindx.training.loop.Trainer on the preprocessed uint8 arrays (memory-mapped,
          one read per batch), batch augmentation in torch, channels_last, thread count
          from the CPU count (OMP_NUM_THREADS if set), AMP on CUDA.

Both train the same freshly initialised architecture with AdamW on the same images; the
first `--warmup` steps of each are not timed. The two loops alternate in `--rounds` rounds
so that a change in machine load affects both alike.

    python bench/train_throughput.py                      # ResNet-50, 64 px, batch 32, CPU (~3 min on 2 cores)
    python bench/train_throughput.py --arch resnet18 --size 128 --steps 50 --device cuda
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from skindx.inference import CLASS_CODES, PreprocessingContract, resize_to_contract
from skindx.models import build_model
from skindx.training.data import SplitArrays
from skindx.training.loop import TrainConfig, Trainer, seed_everything

REPO = Path(__file__).resolve().parents[1]
SOURCES = (REPO / "data/raw", REPO.parent / "shared/data/ham10000")


def find_images(source: Path | None, n: int) -> list[tuple[Path, int]]:
    """The first `n` images (round-robin over classes) of a flat-layout source."""
    candidates = [source] if source else list(SOURCES)
    for root in candidates:
        for meta in ("metadata.csv", "HAM10000_metadata.csv"):
            if (root / meta).exists():
                with (root / meta).open() as fh:
                    rows = list(csv.DictReader(fh))
                by_class = {c: [r for r in rows if r["dx"] == c] for c in CLASS_CODES}
                picked = []
                for i in range(n):
                    pool = by_class[CLASS_CODES[i % len(CLASS_CODES)]]
                    row = pool[(i // len(CLASS_CODES)) % len(pool)]
                    picked.append(
                        (root / "images" / f"{row['image_id']}.jpg", CLASS_CODES.index(row["dx"]))
                    )
                return picked
    sys.exit(f"no image source found in {[str(c) for c in candidates]}: pass --source")


class JpegDataset(Dataset):
    def __init__(self, items, size: int):
        self.items = items
        self.transform = transforms.Compose(
            [
                transforms.Resize(size),
                transforms.CenterCrop(size),
                transforms.RandomHorizontalFlip(),
                transforms.RandomVerticalFlip(),
                transforms.ToTensor(),
                transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ]
        )

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), label


def naive_steps(model, loader_iter, optimizer, device, steps: int) -> float:
    model.train()
    criterion = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(steps):
        x, y = next(loader_iter)
        x, y = x.to(device), y.to(device)
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def project_steps(trainer: Trainer, steps: int, epoch: int) -> float:
    trainer.steps_per_epoch = steps
    start = time.perf_counter()
    trainer._seed_epoch(epoch)
    trainer.train_epoch(epoch)  # ends with .item(): synchronised
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50", choices=["resnet18", "resnet50"])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per loop per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--source", type=Path, help="flat-layout image folder (metadata CSV + images/)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/train_throughput.json")
    args = parser.parse_args()

    n_images = args.batch_size * (args.warmup + args.steps * args.rounds + 1)
    items = find_images(args.source, n_images)
    contract = PreprocessingContract(input_size=args.size)
    # the preprocess stage's work, done once (not timed): decode + resize into uint8 arrays
    arrays = SplitArrays(
        np.stack([resize_to_contract(Image.open(p).convert("RGB"), contract) for p, _ in items]),
        np.array([label for _, label in items], dtype=np.int64),
    )
    tmp = Path(tempfile.mkdtemp(prefix="skindx-bench-"))
    np.save(tmp / "images.npy", arrays.images)
    arrays = SplitArrays(np.load(tmp / "images.npy", mmap_mode="r"), arrays.labels)
    val = SplitArrays(
        np.asarray(arrays.images[: args.batch_size]), arrays.labels[: args.batch_size]
    )

    config = TrainConfig(
        epochs=args.rounds + 1,  # enough scheduled steps for the warm-up and every round
        batch_size=args.batch_size,
        imbalance="none",
        device=args.device,
        max_steps_per_epoch=max(args.steps, args.warmup),
        seed=0,
    )
    seed_everything(0)
    trainer = Trainer(
        build_model(args.arch), arrays, val, contract, config, out_dir=tmp, progress=False
    )
    device = trainer.device
    threads = torch.get_num_threads()

    # same thread count for both (set process-wide by the Trainer): the comparison is about
    # the data path and memory format, not about oversubscribing a shared machine
    seed_everything(0)
    naive_model = build_model(args.arch).to(device)
    naive_optimizer = torch.optim.AdamW(naive_model.parameters(), lr=1e-3)
    naive_loader = DataLoader(
        JpegDataset(items, args.size), batch_size=args.batch_size, shuffle=True
    )

    def batches():
        while True:
            yield from naive_loader

    naive_iter = batches()
    print(
        f"{args.arch}, {args.size} px, batch {args.batch_size}, {device}, {threads} threads: warming up",
        file=sys.stderr,
    )
    naive_steps(naive_model, naive_iter, naive_optimizer, device, args.warmup)
    project_steps(trainer, args.warmup, 1)

    naive_time = project_time = 0.0
    for r in range(args.rounds):
        naive_time += naive_steps(naive_model, naive_iter, naive_optimizer, device, args.steps)
        project_time += project_steps(trainer, args.steps, 2 + r)
        print(
            f"round {r + 1}/{args.rounds}: naive {naive_time:.1f} s, project {project_time:.1f} s",
            file=sys.stderr,
        )

    timed = args.steps * args.rounds * args.batch_size
    naive_ips, project_ips = timed / naive_time, timed / project_time
    result = {
        "benchmark": "train_throughput",
        "arch": args.arch,
        "image_size": args.size,
        "batch_size": args.batch_size,
        "timed_steps_per_loop": args.steps * args.rounds,
        "warmup_steps": args.warmup,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "amp": trainer.use_amp,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "naive_images_per_s": round(naive_ips, 2),
        "project_images_per_s": round(project_ips, 2),
        "speedup": round(project_ips / naive_ips, 3),
        "target_speedup": 1.5,
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"naive   {naive_ips:8.1f} img/s\nproject {project_ips:8.1f} img/s\n"
        f"speedup {project_ips / naive_ips:.2f}x (target >= 1.5x) -> {args.out}"
    )
    for path in tmp.iterdir():
        path.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
