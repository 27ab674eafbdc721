"""train stage: paths.processed_dir -> {best,last}.pt and run.json in paths.train_dir, and
paths.history_csv.

`python pipelines/train.py --resume` continues an interrupted run from last.pt in
paths.train_dir (outside DVC, which deletes a stage's outputs before running it).
"""

from __future__ import annotations

import argparse
import logging

from skindx.cli import run_cli
from skindx.config import load_params, stage_params
from skindx.training.stage import run_train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--resume", action="store_true", help="continue from last.pt in paths.train_dir"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = stage_params("model", "train", "mlflow", "paths")
    result = run_train(params, all_params=load_params(), resume=args.resume)
    print(
        f"train: best val balanced accuracy {result.best_metric:.4f} at epoch {result.best_epoch}"
        f" of {result.epochs_run}{' (early stop)' if result.stopped_early else ''};"
        f" {result.seconds:.0f} s; checkpoint {result.best_path}"
    )


if __name__ == "__main__":
    run_cli(main, "train", hint="Resume with: python pipelines/train.py --resume")
