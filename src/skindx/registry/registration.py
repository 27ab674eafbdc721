"""Registration: log a package's ONNX model into MLflow and register a new version of it.

`register_package` logs the model (signature + input example) into the pipeline's MLflow run,
registers a version, tags it with the test metrics and lineage, and stores the whole package
as run artifacts so that `restore_version` can put it back into serving/model/.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skindx import tracking
from skindx.export.atomic import staging_dir
from skindx.export.card import write_card
from skindx.inference.metrics import flat_metrics
from skindx.inference.model import CARD_DIGEST_KEY, INPUT_NAME, ONNX_FILE, OUTPUT_NAMES
from skindx.inference.preprocessing import normalize
from skindx.registry.errors import RegistryError
from skindx.registry.install import install_package

METRIC_TAG_PREFIX = "metric."
PACKAGE_ARTIFACTS_TAG = "package_artifact_path"


def mlflow_client(mlflow_params: dict[str, Any] | None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking.tracking_uri(mlflow_params))


def _run_exists(run_id: str, mlflow_params: dict[str, Any] | None) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client(mlflow_params).get_run(run_id)
        return True
    except MlflowException:
        return False


def model_signature(card: dict[str, Any], features_shape: tuple[int, ...]):
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    size = int(card["preprocessing"]["input_size"])
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, size, size), INPUT_NAME)]),
        outputs=Schema(
            [
                TensorSpec(np.dtype(np.float32), (-1, len(card["classes"])), OUTPUT_NAMES[0]),
                TensorSpec(np.dtype(np.float32), (-1, *features_shape[1:]), OUTPUT_NAMES[1]),
            ]
        ),
    )


def serving_requirements() -> list[str]:
    """Pinned packages that run the logged ONNX model (what the serving image installs)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("onnx", "onnxruntime", "numpy"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    run_id: str
    model_uri: str


def register_package(
    package_dir: str | Path,
    registered_model: str,
    *,
    run_id: str | None = None,
    mlflow_params: dict[str, Any] | None = None,
    run_tags: dict[str, str] | None = None,
) -> Registration | None:
    """Log and register the package in `package_dir`; rewrites its card with the version.

    Returns None (nothing logged) when tracking is off (SKINDX_TRACKING=off)."""
    import onnx

    if not tracking.tracking_enabled():
        return None

    from skindx.inference.model import load_packaged_model

    package_dir = Path(package_dir)
    packaged = load_packaged_model(package_dir, threads=1)  # verified before anything is logged
    card = packaged.card
    size = packaged.contract.input_size
    example = normalize(np.full((1, size, size, 3), 128, np.uint8), packaged.contract)
    signature = model_signature(card, packaged.run(example)[1].shape)

    mlflow = tracking.configure(mlflow_params)
    if run_id and not _run_exists(run_id, mlflow_params):
        print(
            f"registry: MLflow run {run_id} (models/train/run.json) is not in this store; "
            "logging to a new run",
            file=sys.stderr,
        )
        run_id = None
    # A resumed pipeline run keeps train's tags; a fresh run gets the lineage tags.
    with mlflow.start_run(run_id=run_id, tags=None if run_id else run_tags) as run:
        info = mlflow.onnx.log_model(
            onnx.load(str(package_dir / ONNX_FILE)),
            name="model",
            signature=signature,
            input_example=example,
            registered_model_name=registered_model,
            save_as_external_data=False,  # one self-contained file, as in the package
            onnx_execution_providers=["CPUExecutionProvider"],
            pip_requirements=serving_requirements(),  # inferring them costs a subprocess
            metadata={"skindx_card_version": card["version"]},
        )
        version = str(info.registered_model_version)
        artifact_path = f"packages/v{version}"
        card["version"] = version
        card["registry"] = {
            "name": registered_model,
            "version": version,
            "run_id": run.info.run_id,
            "model_uri": f"models:/{registered_model}/{version}",
            "package_artifacts": artifact_path,
        }
        card["lineage"]["mlflow_run_id"] = run.info.run_id  # the run actually logged to
        write_card(card, package_dir)  # sealed again; the files' hashes stay valid
        mlflow.log_artifacts(str(package_dir), artifact_path=artifact_path)
        for key, value in flat_metrics(card.get("metrics") or {}).items():
            if "." not in key:  # headline metrics on the run; per-class ones stay in tags
                mlflow.log_metric(f"test_{key}", value)

    client = mlflow_client(mlflow_params)
    lineage = card.get("lineage") or {}
    tags = {
        **{f"{METRIC_TAG_PREFIX}{k}": f"{v:.6g}" for k, v in flat_metrics(card["metrics"]).items()},
        "git_commit": str(lineage.get("git_commit")),
        "data_hash": str(lineage.get("data_hash")),
        "onnx_sha256": card["files"][ONNX_FILE],
        "card_sha256": card[CARD_DIGEST_KEY],  # the card as registered, version included
        "input_size": str(size),
        "arch": str((card.get("architecture") or {}).get("arch")),
        PACKAGE_ARTIFACTS_TAG: artifact_path,
    }
    for key, value in tags.items():
        client.set_model_version_tag(registered_model, version, key, value)
    return Registration(registered_model, version, run.info.run_id, card["registry"]["model_uri"])


def restore_version(
    registered_model: str, version: str, serving_dir: str | Path, mlflow_params=None
) -> Path:
    """Download a registered version's package from its MLflow run into `serving_dir`."""
    import mlflow.artifacts

    mv = mlflow_client(mlflow_params).get_model_version(registered_model, version)
    path = mv.tags.get(PACKAGE_ARTIFACTS_TAG)
    if not path or not mv.run_id:
        raise RegistryError(f"{registered_model} v{version} has no stored package to restore")
    download = staging_dir(Path(serving_dir).parent / ".download")
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id,
            artifact_path=path,
            dst_path=str(download),
            tracking_uri=tracking.tracking_uri(mlflow_params),
        )
        return install_package(local, serving_dir)
    finally:
        shutil.rmtree(download, ignore_errors=True)
