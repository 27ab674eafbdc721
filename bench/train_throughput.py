"""Training throughput: the project's loop against a naive loop, same model, batch and
resolution, in one run. Writes bench/results/train_throughput.json.

naive   : a Dataset over the raw JPEGs that decodes and resizes every image at every step
          (torchvision Resize/CenterCrop/flip/ToTensor/Normalize), default memory format,
          fp32, no tuning: what a first training script looks like.
project : skindx.training.loop.Trainer on the preprocessed uint8 arrays (memory-mapped,
          one read per batch), batch augmentation in torch, channels_last, thread count
          from the CPU count (OMP_NUM_THREADS if set), AMP on CUDA.

project-bf16 : the project loop under `torch.autocast(<device>, torch.bfloat16)`
          (train.amp=on), timed in the same rounds where bf16 is native (`--bf16 on`
          forces it, `--bf16 off` skips it). On a CPU without
          AMX/AVX512-BF16 this is emulated, and slower than fp32: that is why train.amp=auto
          enables it only where the CPU has the units (skindx.training.precision).

Both train the same freshly initialised architecture with AdamW on the same images; the
first `--warmup` steps of each are not timed. The loops alternate in `--rounds` rounds
so that a change in machine load affects them alike.

Arithmetic: the FLOPs of one training step (forward + backward) are counted with
torch.utils.flop_counter.FlopCounterMode (matmuls and convolutions, 2 FLOPs per multiply-add;
the rule of thumb ResNet-50 = 4.1 GFLOPs forward at 224 px, x (size/224)^2, x3 for the step is
printed beside it). Achieved GFLOP/s = step FLOPs x steps / time, and its share of the
machine's fp32 peak = cores x clock x fp32 FLOPs per cycle per core, derived from lscpu and
/proc/cpuinfo under a stated assumption (`cpu_peak`): two FMA units per core, each 8 fp32
lanes with AVX2 (Zen 2/3, Haswell and later) or 16 with AVX-512 (Xeon Skylake-SP and later;
Zen 4 double-pumps 256-bit units, so this overstates its peak 2x), 2 FLOPs per FMA.

    python bench/train_throughput.py                      # ResNet-50, 64 px, batch 32, CPU (~3 min on 2 cores)
    python bench/train_throughput.py --arch resnet18 --size 128 --steps 50 --device cuda
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import re
import subprocess
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
from skindx.training.precision import cpu_bf16_support, cpu_flags

# forward GFLOPs at 224 px (2 FLOPs per multiply-add), the published figures
FORWARD_GFLOPS_224 = {"resnet18": 1.82, "resnet50": 4.1}

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


def cpu_peak(cores: int) -> dict:
    """The machine's fp32 peak from lscpu (clock) and /proc/cpuinfo (vector units), with the
    assumption spelled out. The clock: lscpu's `CPU max MHz` where the hypervisor exposes it,
    else BogoMIPS / 2 (x86 BogoMIPS is twice the TSC clock)."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        lscpu = ""

    def field(name: str) -> str | None:
        match = re.search(rf"^{re.escape(name)}:\s*(.+)$", lscpu, re.MULTILINE)
        return match.group(1).strip() if match else None

    if field("CPU max MHz"):
        ghz, clock_source = float(field("CPU max MHz")) / 1000, "lscpu CPU max MHz"
    elif field("BogoMIPS"):
        ghz, clock_source = float(field("BogoMIPS")) / 2000, "lscpu BogoMIPS / 2"
    else:
        ghz, clock_source = 2.0, "unknown clock: 2.0 GHz assumed"
    flags = cpu_flags()
    if "avx512f" in flags:
        lanes, isa = 16, "AVX-512"
    elif "avx2" in flags and "fma" in flags:
        lanes, isa = 8, "AVX2+FMA"
    else:
        lanes, isa = 4, "SSE"
    per_cycle = 2 * lanes * 2  # 2 FMA units x lanes x (multiply + add)
    return {
        "model_name": field("Model name"),
        "cores": cores,
        "clock_ghz": round(ghz, 3),
        "clock_source": clock_source,
        "isa": isa,
        "fp32_flops_per_cycle_per_core": per_cycle,
        "peak_gflops_fp32": round(cores * ghz * per_cycle, 1),
        "bf16_units": cpu_bf16_support(),
        "assumption": f"2 FMA units per core x {lanes} fp32 lanes ({isa}) x 2 FLOPs per FMA",
    }


def step_flops(model: nn.Module, batch: int, size: int, device: torch.device) -> int:
    """FLOPs of one forward + backward on a batch (FlopCounterMode), weights left unchanged."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    was_training = model.training
    model.train()
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return int(counter.get_total_flops())


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
    parser.add_argument(
        "--bf16",
        default="auto",
        choices=["auto", "on", "off"],
        help="time the project loop under bf16 autocast too: auto = where the CPU (or GPU) "
        "computes bf16 natively; on = also emulated (very slow without AMX/AVX512-BF16)",
    )
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
    bf16_trainer = None
    native = device.type == "cuda" or cpu_bf16_support() is not None
    bf16_skipped = None
    if args.bf16 == "off" or (args.bf16 == "auto" and not native):
        bf16_skipped = (
            "--bf16 off"
            if args.bf16 == "off"
            else "the CPU has no AMX/AVX512-BF16: emulated bf16 is slower than fp32, so "
            "train.amp=auto keeps fp32 here (--bf16 on times it anyway)"
        )
        print(f"bf16 autocast not timed: {bf16_skipped}", file=sys.stderr)
    else:
        seed_everything(0)
        bf16_trainer = Trainer(
            build_model(args.arch),
            arrays,
            val,
            contract,
            dataclasses.replace(config, amp="on"),
            out_dir=tmp,
            progress=False,
        )
    seed_everything(0)
    flops = step_flops(build_model(args.arch).to(device), args.batch_size, args.size, device)

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
    if bf16_trainer is not None:
        project_steps(bf16_trainer, args.warmup, 1)

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    naive_time = project_time = bf16_time = 0.0
    for r in range(args.rounds):
        naive_time += naive_steps(naive_model, naive_iter, naive_optimizer, device, args.steps)
        project_time += project_steps(trainer, args.steps, 2 + r)
        if bf16_trainer is not None:
            bf16_time += project_steps(bf16_trainer, args.steps, 2 + r)
        print(
            f"round {r + 1}/{args.rounds}: naive {naive_time:.1f} s, project {project_time:.1f} s"
            + (f", project bf16 {bf16_time:.1f} s" if bf16_trainer is not None else ""),
            file=sys.stderr,
        )

    timed = args.steps * args.rounds * args.batch_size
    naive_ips, project_ips = timed / naive_time, timed / project_time
    timed_steps = args.steps * args.rounds
    achieved = flops * timed_steps / project_time / 1e9
    rule_of_thumb = FORWARD_GFLOPS_224[args.arch] * (args.size / 224) ** 2 * 3 * args.batch_size
    peak = cpu_peak(threads) if device.type == "cpu" else None
    bf16 = {"skipped": bf16_skipped} if bf16_skipped else None
    if bf16_trainer is not None:
        bf16_ips = timed / bf16_time
        bf16 = {
            "precision": bf16_trainer.precision.name,
            "reason": bf16_trainer.precision.reason,
            "images_per_s": round(bf16_ips, 2),
            "ratio_to_fp32": round(bf16_ips / project_ips, 3),
            "achieved_gflops": round(flops * timed_steps / bf16_time / 1e9, 1),
        }
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
        "precision": trainer.precision.name,
        "load_average_before_timing": load_before,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "naive_images_per_s": round(naive_ips, 2),
        "project_images_per_s": round(project_ips, 2),
        "speedup": round(project_ips / naive_ips, 3),
        "target_speedup": 1.5,
        "step_gflops_counted": round(flops / 1e9, 2),
        "step_gflops_rule_of_thumb": round(rule_of_thumb, 2),
        "achieved_gflops_per_s": round(achieved, 1),
        "cpu_peak": peak,
        "fraction_of_fp32_peak": round(achieved / peak["peak_gflops_fp32"], 3) if peak else None,
        "bf16_autocast": bf16,
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"naive   {naive_ips:8.1f} img/s\nproject {project_ips:8.1f} img/s\n"
        f"speedup {project_ips / naive_ips:.2f}x (target >= 1.5x)\n"
        f"step    {flops / 1e9:.1f} GFLOPs counted (rule of thumb {rule_of_thumb:.1f});"
        f" achieved {achieved:.1f} GFLOP/s"
        + (
            f" = {100 * achieved / peak['peak_gflops_fp32']:.1f} % of the fp32 peak"
            f" {peak['peak_gflops_fp32']:.0f} GFLOP/s ({peak['assumption']},"
            f" {peak['cores']} cores at {peak['clock_ghz']} GHz)"
            if peak
            else ""
        )
    )
    if bf16 and not bf16_skipped:
        print(
            f"bf16    {bf16['images_per_s']:8.1f} img/s ({bf16['precision']}:"
            f" {bf16['reason']}), {bf16['ratio_to_fp32']:.2f}x fp32"
        )
    print(f"-> {args.out}")
    for path in tmp.iterdir():
        path.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
