"""evaluate stage: best.pt in paths.train_dir on the test split -> paths.metrics,
paths.temperature, paths.plots_dir (CSV + PNG), logged to the train run."""

from __future__ import annotations

import logging

from skindx.cli import run_cli
from skindx.config import stage_params
from skindx.evaluation.stage import run_evaluate
from skindx.inference.metrics import HEADLINE_METRICS, METRIC_LABELS


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    metrics = run_evaluate(stage_params("evaluate", "mlflow", "paths"))

    def fmt(key: str) -> str:
        value = metrics.get(key)
        return f"{METRIC_LABELS[key].lower()} " + ("n/a" if value is None else f"{value:.4f}")

    print("evaluate: test " + ", ".join(fmt(key) for key in HEADLINE_METRICS))


if __name__ == "__main__":
    run_cli(main, "evaluate")
