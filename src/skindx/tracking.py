"""MLflow setup and lineage: the one place that decides where runs go and how they are tagged.

Tracking URI: $MLFLOW_TRACKING_URI (any MLflow server, e.g. `http://host:5000/mlflow`, or a
database URI), else `mlflow.tracking_uri` from params.yaml (default `sqlite:///${paths.mlflow_db}`,
mlflow.db in the project root: the embedded store for one user). Data stages log to their own
experiment (`mlflow.data_experiment`) so that the model experiment shows one row per pipeline run.

A relative SQLite path is relative to the project root, `$DVC_ROOT` when DVC sets it: a queued
experiment (`dvc exp run --queue`) runs in a temporary copy under .dvc/tmp/exps, and its runs,
artifacts and registered versions must land in the checkout's store, not in a folder that DVC
deletes afterwards.

The experiments carry `mlflow.experimentKind` = `custom_model_development`, MLflow 3's tag for
"machine learning" (not GenAI) experiments, and `runs_view_url` is the link straight to the runs
table: MLflow 3's UI opens in its GenAI view (traces) unless the URL asks for
`workflowType=machine_learning`.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

# In paths.train_dir: train writes the pipeline run's id there; evaluate and package log to
# the same run.
RUN_FILE = "run.json"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# MLflow 3's experiment-type tag and its value for model training (the UI's "Machine learning")
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"
SPLITS = ("train", "val", "test")
# A shared view of the runs table (MLflow's "Views"), stored as an experiment tag and named in the
# URL by viewStateShareKey: the Dataset column and the test headline metrics, best run first, so
# that two runs are compared by what matters without choosing columns first.
VIEW_STATE_TAG_PREFIX = "mlflow.sharedViewState."
HEADLINE_VIEW = "skindx-headline"
SQLITE_PREFIX = "sqlite:///"


def run_file(train_dir: str | Path) -> Path:
    return Path(train_dir) / RUN_FILE


def project_root() -> Path:
    """The checkout the pipeline belongs to: `$DVC_ROOT` (DVC sets it for every stage, and for a
    queued experiment it names the parent repository, not the temporary copy), else the cwd."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def _anchor_sqlite(uri: str) -> str:
    """`sqlite:///relative.db` -> `sqlite:////<project root>/relative.db`; other URIs as given."""
    if uri.startswith(SQLITE_PREFIX) and not uri[len(SQLITE_PREFIX) :].startswith("/"):
        path = uri[len(SQLITE_PREFIX) :]
        if path and not path.startswith(":memory:"):
            return SQLITE_PREFIX + str(project_root() / path)
    return uri


def tracking_uri(mlflow_params: dict[str, Any] | None = None) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return _anchor_sqlite(env)
    return _anchor_sqlite((mlflow_params or {}).get("tracking_uri", DEFAULT_TRACKING_URI))


def runs_view_url(mlflow_url: str, experiment_id: str) -> str:
    """The MLflow UI's runs table of one experiment (`mlflow_url`: where the UI is, e.g.
    `http://127.0.0.1:8080/mlflow/`), in the machine-learning view rather than the GenAI one."""
    return (
        f"{mlflow_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
        f"?workflowType=machine_learning&viewStateShareKey={HEADLINE_VIEW}"
    )


def headline_view_state() -> dict[str, Any]:
    """The runs-table state of `HEADLINE_VIEW` (column keys as MLflow's UI writes them)."""
    from skindx.inference.metrics import HEADLINE_METRICS, PRIMARY_METRIC

    columns = ["attributes.`Dataset`"] + [f"metrics.`test_{m}`" for m in HEADLINE_METRICS]
    return {
        "selectedColumns": columns,
        "orderByKey": f"metrics.`test_{PRIMARY_METRIC}`",
        "orderByAsc": False,
    }


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

    uri = tracking_uri(mlflow_params)
    mlflow.set_tracking_uri(uri)
    name = experiment or (mlflow_params or {}).get("experiment", "skindx")
    ensure_experiment(mlflow, name, uri)
    mlflow.set_experiment(name)
    return mlflow


def ensure_experiment(mlflow, name: str, uri: str) -> str:
    """Create `name` if needed (with a SQLite store, its artifacts under the project root's
    mlruns/, where a queued experiment's temporary copy does not take them along) and tag it
    as model development; returns its id."""
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(name)
    if found is None:
        location = None
        if uri.startswith(SQLITE_PREFIX):
            location = (project_root() / "mlruns" / name).as_uri()
        try:
            experiment_id = client.create_experiment(
                name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_DEVELOPMENT}
            )
        except MlflowException:  # another stage or experiment created it meanwhile
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            experiment_id = found.experiment_id
    else:
        experiment_id = found.experiment_id
    tags = found.tags if found is not None else {EXPERIMENT_KIND_TAG: MODEL_DEVELOPMENT}
    if tags.get(EXPERIMENT_KIND_TAG) != MODEL_DEVELOPMENT:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT)
    view = json.dumps(headline_view_state(), sort_keys=True)
    if tags.get(VIEW_STATE_TAG_PREFIX + HEADLINE_VIEW) != view:
        client.set_experiment_tag(experiment_id, VIEW_STATE_TAG_PREFIX + HEADLINE_VIEW, view)
    return experiment_id


def log_split_datasets(mlflow, processed_dir: str | Path, data_hash: str) -> None:
    """Log the processed splits (paths.processed_dir/splits/<split>.csv: image_id, lesion_id,
    dx, label) as the active run's MLflow dataset inputs, context = split, digest from the
    data hash and the split's size, so the runs table's Dataset column names what each run was
    trained and evaluated on and two runs can be compared by it. Splits without a file are
    skipped."""
    import pandas as pd

    splits_dir = Path(processed_dir) / "splits"
    with warnings.catch_warnings():  # MLflow's schema-inference hints: noise here
        warnings.simplefilter("ignore", UserWarning)
        for split in SPLITS:
            path = splits_dir / f"{split}.csv"
            if not path.is_file():
                continue
            frame = pd.read_csv(path, dtype={"image_id": str, "lesion_id": str, "dx": str})
            dataset = mlflow.data.from_pandas(
                frame,
                source=str(path.resolve()),
                targets="label" if "label" in frame.columns else None,
                name=f"ham10000-{split}",
                digest=f"{data_hash[:12]}-{split}-{len(frame)}",
            )
            mlflow.log_input(dataset, context=split, tags={"data_hash": data_hash})


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


def feedback_tags(manifest: Path | None) -> dict[str, str]:
    """The reviewed cases the ingested data holds (the manifest's `feedback` section, written
    by skindx.data.feedback): their count and review window; {} without a feedback source."""
    try:
        summary = json.loads(manifest.read_text()).get("feedback") if manifest else None
    except (OSError, ValueError):
        summary = None
    if not isinstance(summary, dict):
        return {}
    return {
        "feedback_cases": str(summary.get("n_cases", 0)),
        "feedback_window": f"[{summary.get('since') or '-inf'}, {summary.get('until')})",
    }


def lineage_tags(
    stage: str, profile: str | None = None, *, manifest: Path | None = None
) -> dict[str, str]:
    tags = {"git_commit": git_commit(), "dvc_stage": stage, "data_hash": data_hash(manifest)}
    if profile:
        tags["profile"] = str(profile)
    return tags | feedback_tags(manifest)


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
