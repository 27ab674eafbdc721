"""external stage: evaluate.external (a labelled folder) scored by the candidate package as the
API would score it -> paths.external_report (a DVC metric) and paths.external_predictions,
logged to the pipeline's MLflow run; evaluate.external null: a report saying so, nothing else
(see skindx.evaluation.external)."""

from __future__ import annotations

import logging

from skindx.cli import run_cli
from skindx.config import stage_params
from skindx.evaluation.external import format_summary, run_external


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(format_summary(run_external(stage_params("evaluate", "mlflow", "paths"))))


if __name__ == "__main__":
    run_cli(main, "external")
