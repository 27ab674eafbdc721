"""MLflow setup and lineage: the one place that decides where runs go and how they are tagged.

Tracking URI: $MLFLOW_TRACKING_URI, else `mlflow.tracking_uri` from params.yaml (default
`sqlite:///${paths.mlflow_db}`, mlflow.db in the project root). Data stages log to their own experiment
(`mlflow.data_experiment`) so that the model experiment shows one row per pipeline run.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

# In paths.train_dir: train writes the pipeline run's id there; evaluate and package log to
# the same run.
RUN_FILE = "run.json"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def run_file(train_dir: str | Path) -> Path:
    return Path(train_dir) / RUN_FILE


def tracking_uri(mlflow_params: dict[str, Any] | None = None) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return (mlflow_params or {}).get("tracking_uri", DEFAULT_TRACKING_URI)


def tracking_enabled() -> bool:
    """SKINDX_TRACKING=off runs the stages without MLflow (e.g. on a GPU box without it)."""
    return os.environ.get("SKINDX_TRACKING", "on").strip().lower() not in {"off", "0", "false"}


def configure(mlflow_params: dict[str, Any] | None = None, experiment: str | None = None):
    """Point mlflow at the project's store and select the experiment; returns the module
    (or a `NullTracker` with the same calls when tracking is switched off)."""
    if not tracking_enabled():
        return NullTracker()
    # MLflow 3 otherwise checks pip requirements online when logging a model.
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(mlflow_params))
    name = experiment or (mlflow_params or {}).get("experiment", "skindx")
    mlflow.set_experiment(name)
    return mlflow


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
        commit = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def data_hash(manifest: Path | None) -> str:
    """The ingested dataset's content hash, written by the ingest stage into its manifest
    (`paths.raw_dir`/manifest.json); "unknown" when there is none."""
    if manifest is None:
        return "unknown"
    try:
        return json.loads(manifest.read_text()).get("data_hash", "unknown")
    except (OSError, ValueError):
        return "unknown"


def lineage_tags(
    stage: str, profile: str | None = None, *, manifest: Path | None = None
) -> dict[str, str]:
    tags = {"git_commit": git_commit(), "dvc_stage": stage, "data_hash": data_hash(manifest)}
    if profile:
        tags["profile"] = str(profile)
    return tags


def pipeline_run_id(path: Path) -> str | None:
    """The run id in a run.json (`run_file(paths.train_dir)`), None without one."""
    try:
        return json.loads(path.read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        return None


class NullTracker:
    """Stands in for the `mlflow` module when SKINDX_TRACKING=off: every call is accepted and
    dropped, so stage code needs no branches. Runs get a local id for run.json."""

    class _Run:
        def __init__(self, run_id: str) -> None:
            from types import SimpleNamespace

            self.info = SimpleNamespace(run_id=run_id, experiment_id="none")

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            return None

    class _Data:
        def __getattr__(self, _name: str):
            return lambda *a, **k: None

    data = _Data()

    def start_run(self, run_id: str | None = None, **_kwargs: Any) -> NullTracker._Run:
        import uuid

        return self._Run(run_id or f"untracked-{uuid.uuid4().hex[:12]}")

    def __getattr__(self, _name: str):
        return lambda *a, **k: None
