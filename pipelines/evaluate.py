"""evaluate stage: models/train/best.pt on the test split -> reports/metrics.json,
reports/calibration/temperature.json, reports/plots/ (CSV + PNG), logged to the train run."""

from __future__ import annotations

import logging

from skindx.cli import run_cli
from skindx.config import stage_params
from skindx.evaluation.stage import run_evaluate


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    metrics = run_evaluate(stage_params("evaluate", "mlflow"))

    def fmt(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    print(
        f"evaluate: test balanced accuracy {fmt('balanced_accuracy')}, macro-F1 {fmt('macro_f1')},"
        f" accuracy {fmt('accuracy')}, melanoma sensitivity {fmt('melanoma_sensitivity')},"
        f" ROC AUC {fmt('roc_auc_macro')}; ECE {fmt('ece_before')} -> {fmt('ece_after')}"
        f" at T={fmt('temperature')}"
    )


if __name__ == "__main__":
    run_cli(main, "evaluate")
