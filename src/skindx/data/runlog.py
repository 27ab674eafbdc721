"""Record a data stage in MLflow: one run per stage execution in `mlflow.data_experiment`,
tagged with the lineage (git commit, DVC stage, data hash, profile) by `skindx.tracking`.

Tracking is a record of the work, not the work: when the store cannot be written the stage
warns and still succeeds, because DVC's outputs are the source of truth.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from skindx import tracking
from skindx.data.ingest import MANIFEST_FILE

DEFAULT_DATA_EXPERIMENT = "skindx-data"


def log_data_run(
    stage: str,
    params: Mapping[str, Any],
    *,
    run_params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    artifacts: Iterable[Path] = (),
    tags: Mapping[str, str] | None = None,
    datasets: Mapping[str, pd.DataFrame] | None = None,
    figure: Any = None,
) -> str | None:
    """Log one run for `stage`; `params` is the stage's params (for `mlflow`, `profile` and
    `paths.raw_dir`, whose manifest gives the data hash).

    `datasets` maps an MLflow input context (e.g. "train") to the table it describes, so the
    MLflow UI lists the data each run saw. Returns the run id, or None if logging failed.
    """
    if not tracking.tracking_enabled():
        print(f"{stage}: MLflow tracking is off (SKINDX_TRACKING); nothing logged")
        return None
    mlflow_params = dict(params.get("mlflow") or {})
    experiment = mlflow_params.get("data_experiment", DEFAULT_DATA_EXPERIMENT)
    try:
        mlflow = tracking.configure(mlflow_params, experiment=experiment)
        raw_dir = (params.get("paths") or {}).get("raw_dir")
        manifest = Path(raw_dir) / MANIFEST_FILE if raw_dir else None
        lineage = tracking.lineage_tags(stage, params.get("profile"), manifest=manifest)
        run_tags = {**lineage, **(tags or {})}
        with mlflow.start_run(run_name=stage, tags=run_tags) as run:
            if run_params:
                mlflow.log_params({k: str(v)[:500] for k, v in run_params.items()})
            if metrics:
                mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            data_hash = run_tags.get("data_hash", "unknown")
            with warnings.catch_warnings():  # MLflow's schema-inference hints: noise here
                warnings.simplefilter("ignore", UserWarning)
                for context, frame in (datasets or {}).items():
                    dataset = mlflow.data.from_pandas(
                        frame,
                        source=str(Path.cwd()),
                        name=f"ham10000-{context}",
                        digest=f"{data_hash[:12]}-{context}-{len(frame)}",
                    )
                    mlflow.log_input(dataset, context=context)
            for path in artifacts:
                path = Path(path)
                if path.is_file():
                    mlflow.log_artifact(str(path))
            if figure is not None:
                mlflow.log_figure(figure, "class_distribution.png")
            print(f"{stage}: logged MLflow run {run.info.run_id} in experiment {experiment!r}")
            return run.info.run_id
    except Exception as exc:  # noqa: BLE001 (any tracking failure must not fail the data stage)
        print(
            f"{stage}: warning: could not log to MLflow ({type(exc).__name__}: {exc})",
            file=sys.stderr,
        )
        return None


def class_distribution_figure(counts: Mapping[str, Mapping[str, int]]):
    """A grouped horizontal bar chart of images per class and split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(counts)
    classes = list(next(iter(counts.values())))
    fig, ax = plt.subplots(figsize=(7, 4))
    height = 0.8 / max(1, len(splits))
    for i, split in enumerate(splits):
        positions = [c + i * height for c in range(len(classes))]
        ax.barh(positions, [counts[split][c] for c in classes], height=height, label=split)
    ax.set_yticks([c + 0.4 - height / 2 for c in range(len(classes))], classes)
    ax.set_xlabel("images")
    ax.set_title("Class distribution per split")
    ax.legend()
    fig.tight_layout()
    return fig
