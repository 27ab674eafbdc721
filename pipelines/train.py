"""train stage: paths.processed_dir -> {best,last}.pt and run.json in paths.train_dir, and
paths.history_csv.

`python pipelines/train.py --resume` continues an interrupted run from last.pt in
paths.train_dir (outside DVC, which deletes a stage's outputs before running it).

With train.nproc_per_node > 1 or train.nnodes > 1 this script reads params.yaml once and runs
itself under torchrun (skindx.training.distributed.launch), handing every rank the params in a
JSON file (--params-file). Started by torchrun directly (a multi-node job, docs/scaling.md), a
rank reads params.yaml itself with plain YAML (no DVC call, no lock).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

from skindx.cli import run_cli
from skindx.config import load_params, stage_params
from skindx.training.distributed import LaunchSettings, init_distributed, launch, under_torchrun
from skindx.training.stage import run_train

SECTIONS = ("model", "train", "mlflow", "paths")


def summary(result) -> str:
    return (
        f"train: best val balanced accuracy {result.best_metric:.4f} at epoch {result.best_epoch}"
        f" of {result.epochs_run}{' (early stop)' if result.stopped_early else ''};"
        f" {result.seconds:.0f} s; checkpoint {result.best_path}"
    )


def run_rank(params: dict, all_params: dict, resume: bool) -> None:
    """One torchrun worker."""
    train = params["train"]
    ctx = init_distributed(
        train.get("device", "auto"), LaunchSettings.from_train(train).dist_timeout_s
    )
    try:
        result = run_train(params, all_params=all_params, resume=resume, dist=ctx)
        if ctx.is_main:
            print(summary(result) + f" ({ctx.world_size} ranks, {ctx.backend})", flush=True)
        ctx.barrier()  # no rank leaves while rank 0 still writes
    finally:
        ctx.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--resume", action="store_true", help="continue from last.pt in paths.train_dir"
    )
    parser.add_argument(
        "--params-file", type=Path, help="(set by the launcher for its ranks) params as JSON"
    )
    args = parser.parse_args()
    rank = os.environ.get("RANK", "0")
    level = logging.INFO if rank == "0" else logging.WARNING
    logging.basicConfig(level=level, format=f"%(levelname)s [rank {rank}] %(name)s: %(message)s")

    if args.params_file:
        handed = json.loads(args.params_file.read_text())
        params, all_params = handed["params"], handed["all_params"]
    else:
        params, all_params = stage_params(*SECTIONS), load_params()

    if under_torchrun():
        run_rank(params, all_params, args.resume)
        return
    settings = LaunchSettings.from_train(params["train"])
    if not settings.distributed:
        print(summary(run_train(params, all_params=all_params, resume=args.resume)))
        return
    settings.check_batch(int(params["train"]["batch_size"]))  # fail before starting ranks
    with tempfile.TemporaryDirectory(prefix="skindx-train-") as tmp:
        handoff = Path(tmp) / "params.json"
        handoff.write_text(json.dumps({"params": params, "all_params": all_params}))
        script_args = ["--params-file", str(handoff)] + (["--resume"] if args.resume else [])
        launch(settings, Path(__file__).resolve(), script_args)


if __name__ == "__main__":
    stage = f"train [rank {os.environ['RANK']}]" if under_torchrun() else "train"
    run_cli(main, stage, hint="Resume with: python pipelines/train.py --resume")
