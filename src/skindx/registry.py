"""The MLflow model registry side of SkinDX: register packaged models, decide promotions.

`register_package` logs a package's ONNX model (signature + input example) into the
pipeline's MLflow run, registers a new version of the registered model, tags it with its test
metrics and lineage, and stores the whole package as run artifacts so it can be restored.

`promote` compares the candidate with the holder of the `champion` alias (aliases, not the
deprecated stages), and on promotion moves the alias and atomically replaces serving/model/.
Every decision is appended to reports/promotions.jsonl and tagged on the candidate version.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skindx import tracking
from skindx.export.atomic import replace_directory, staging_dir
from skindx.export.card import now_iso, write_card
from skindx.inference.model import (
    CARD_DIGEST_KEY,
    INPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAMES,
    ModelIntegrityError,
    verify_package,
)
from skindx.inference.preprocessing import normalize

METRIC_TAG_PREFIX = "metric."
PACKAGE_ARTIFACTS_TAG = "package_artifact_path"
# promote.metric must be one of these: `decide` compares them as higher-is-better.
HIGHER_IS_BETTER = (
    "balanced_accuracy",
    "accuracy",
    "macro_f1",
    "roc_auc_macro",
    "melanoma_sensitivity",
)


class RegistryError(RuntimeError):
    """A registry or promotion step cannot proceed; the message says why and what to do."""


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numeric metrics, nested keys joined with '.' (per_class.mel.recall)."""
    flat: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, dict):
            flat.update(flat_metrics(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value):
                flat[f"{prefix}{key}"] = float(value)
    return flat


def metric_value(metrics: dict[str, Any], name: str) -> float | None:
    """`name` from a metrics dict: top level, or under a `test` section, or dotted."""
    flat = flat_metrics(metrics)
    for key in (name, f"test.{name}"):
        if key in flat:
            return flat[key]
    return None


def _client(mlflow_params: dict[str, Any] | None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking.tracking_uri(mlflow_params))


def _run_exists(run_id: str, mlflow_params: dict[str, Any] | None) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        _client(mlflow_params).get_run(run_id)
        return True
    except MlflowException:
        return False


# --- registration ------------------------------------------------------------------------


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

    client = _client(mlflow_params)
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


# --- promotion -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def check_metric(metric: str) -> None:
    if metric not in HIGHER_IS_BETTER:
        raise RegistryError(
            f"promote.metric {metric!r} is not supported: promotion compares higher-is-better "
            f"metrics, one of {', '.join(HIGHER_IS_BETTER)}"
        )


def decide(
    candidate: float,
    champion: float | None,
    *,
    metric: str,
    min_delta: float,
    force: bool,
    champion_version: str | None,
) -> Decision:
    check_metric(metric)
    if champion_version is None:
        return Decision(
            True, f"no champion yet: candidate {metric} {candidate:.4f} becomes the first"
        )
    if champion is None:
        return Decision(
            True,
            f"champion v{champion_version} has no recorded {metric}; the candidate replaces it",
        )
    delta = candidate - champion
    versus = (
        f"candidate {metric} {candidate:.4f} vs champion v{champion_version} {champion:.4f} "
        f"(delta {delta:+.4f}, min_delta {min_delta:g})"
    )
    if force:
        return Decision(True, f"forced by promote.force=true: {versus}")
    if delta >= min_delta - 1e-12:
        return Decision(True, f"better: {versus}")
    return Decision(False, f"not better by min_delta: {versus}")


def install_package(source: str | Path, serving_dir: str | Path) -> Path:
    """Copy a package into `serving_dir`, verified, replacing the old one in one rename."""
    staged = staging_dir(serving_dir)
    try:
        shutil.copytree(source, staged, dirs_exist_ok=True)
        verify_package(staged)
        return replace_directory(staged, serving_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def serving_version(serving_dir: str | Path) -> str | None:
    """The version of an intact package in `serving_dir`, else None."""
    try:
        return str(verify_package(serving_dir)["version"])
    except ModelIntegrityError:
        return None


def restore_version(
    registered_model: str, version: str, serving_dir: str | Path, mlflow_params=None
) -> Path:
    """Download a registered version's package from its MLflow run into `serving_dir`."""
    import mlflow.artifacts

    client = _client(mlflow_params)
    mv = client.get_model_version(registered_model, version)
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


def append_decision(log_path: str | Path, record: dict[str, Any]) -> None:
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as fh:
        fh.write(json.dumps(record, sort_keys=False, default=str) + "\n")


@dataclass(frozen=True)
class Champion:
    version: str
    value: float | None
    run_id: str | None = None


def registry_champion(client, registered_model: str, alias: str, metric: str) -> Champion | None:
    """The version holding `alias`, with the metric it was tagged with at registration."""
    from mlflow.exceptions import MlflowException

    try:
        holder = client.get_model_version_by_alias(registered_model, alias)
    except MlflowException as exc:
        # Only "no registered model" / "no such alias" mean no champion yet: anything else (an
        # unreachable or locked store) must not let any candidate through.
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
            exc.error_code == "INVALID_PARAMETER_VALUE" and f"alias {alias}" in exc.message
        ):
            return None
        raise RegistryError(
            f"cannot read @{alias} of {registered_model!r} from the MLflow registry "
            f"({exc.error_code}: {exc.message}); fix the store and rerun the promote stage"
        ) from exc
    tag = holder.tags.get(f"{METRIC_TAG_PREFIX}{metric}")
    value = float(tag) if tag not in (None, "", "nan") else None
    return Champion(str(holder.version), value, holder.run_id)


def check_registered_package(client, registered_model: str, version: str, card: dict) -> None:
    """The candidate must be the package registered as `version`: its model.onnx (onnx_sha256
    tag) and its card as sealed at registration (card_sha256 tag, on versions that have it)."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_model_version(registered_model, version).tags
    except MlflowException as exc:
        raise RegistryError(
            f"cannot read {registered_model} v{version} from the MLflow registry "
            f"({exc.error_code}: {exc.message}); run the package stage again"
        ) from exc
    expected = {"onnx_sha256": card["files"][ONNX_FILE]}
    if "card_sha256" in tags:
        expected["card_sha256"] = card.get(CARD_DIGEST_KEY)
    for tag, value in expected.items():
        if tags.get(tag) != value:
            raise RegistryError(
                f"the candidate ({tag} {value}) is not the package registered as "
                f"{registered_model} v{version} ({tag} {tags.get(tag)}); "
                "run the package stage again"
            )


def _set_alias(client, registered_model: str, alias: str, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.set_registered_model_alias(registered_model, alias, version)
    except MlflowException as exc:
        raise RegistryError(
            f"could not move @{alias} of {registered_model!r} to v{version} "
            f"({exc.error_code}: {exc.message}); serving/model was left unchanged"
        ) from exc


def serving_champion(serving_dir: str | Path, metric: str) -> Champion | None:
    """Without MLflow (SKINDX_TRACKING=off) the champion is whatever serving/model holds."""
    try:
        card = verify_package(serving_dir)
    except ModelIntegrityError:
        return None
    return Champion(str(card["version"]), metric_value(card.get("metrics") or {}, metric))


def promote(
    candidate_dir: str | Path,
    *,
    registered_model: str,
    metric: str = "balanced_accuracy",
    min_delta: float = 0.005,
    force: bool = False,
    alias: str = "champion",
    serving_dir: str | Path = "serving/model",
    log_path: str | Path = "reports/promotions.jsonl",
    mlflow_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Decide on the candidate package, act on it, log the decision; returns the record."""
    check_metric(metric)
    try:
        card = verify_package(candidate_dir)
    except ModelIntegrityError as exc:
        raise RegistryError(f"the candidate package is not intact: {exc}") from exc
    value = metric_value(card.get("metrics") or {}, metric)
    if value is None:
        raise RegistryError(f"the candidate card has no test metric {metric!r} (promote.metric)")
    registry = card.get("registry") or {}
    tracked = tracking.tracking_enabled()
    if tracked:
        if registry.get("name") != registered_model or not registry.get("version"):
            raise RegistryError(
                f"{candidate_dir} is not a registered version of {registered_model!r} "
                f"(card registry: {registry or 'none'}); run the package stage first."
            )
        version = str(registry["version"])
        client = _client(mlflow_params)
        check_registered_package(client, registered_model, version, card)
        champion = registry_champion(client, registered_model, alias, metric)
    else:
        version = str(card["version"])
        champion = serving_champion(serving_dir, metric)

    if champion is not None and champion.version == version:
        decision, action = Decision(False, f"v{version} already holds @{alias}"), "kept"
    else:
        decision = decide(
            value,
            champion.value if champion else None,
            metric=metric,
            min_delta=min_delta,
            force=force,
            champion_version=champion.version if champion else None,
        )
        action = "promoted" if decision.promote else "rejected"

    reason = decision.reason
    if decision.promote:
        # Alias first: if moving it fails, serving/model still holds the old champion. If the
        # install then fails, the next run sees the candidate "kept" and reinstalls it.
        if tracked:
            _set_alias(client, registered_model, alias, version)
        install_package(candidate_dir, serving_dir)
    else:
        # serving/model must always hold the champion: rebuild it if it went missing or stale.
        holder = version if action == "kept" else champion.version
        if serving_version(serving_dir) != holder:
            if action == "kept":
                install_package(candidate_dir, serving_dir)
            else:
                restore_version(registered_model, holder, serving_dir, mlflow_params)
            reason += f"; {serving_dir} did not hold v{holder} and was restored"
        else:
            reason += f"; {serving_dir} left unchanged"
    if not tracked:
        reason += " (SKINDX_TRACKING=off: compared with serving/model, no registry alias)"

    record = {
        "time": now_iso(),
        "model": registered_model,
        "alias": alias,
        "decision": action,
        "reason": reason,
        "metric": metric,
        "min_delta": min_delta,
        "force": bool(force),
        "candidate": {
            "version": version,
            "run_id": registry.get("run_id"),
            metric: value,
            "metrics": flat_metrics(
                {k: v for k, v in card["metrics"].items() if not isinstance(v, dict)}
            ),
        },
        "champion": None
        if champion is None
        else {"version": champion.version, "run_id": champion.run_id, metric: champion.value},
        "serving_dir": str(serving_dir),
        "serving_version": serving_version(serving_dir),
        "registry": tracking.tracking_uri(mlflow_params) if tracked else None,
    }
    append_decision(log_path, record)
    if tracked:
        for key, val in (
            ("promotion.decision", action),
            ("promotion.reason", reason[:4000]),
            ("promotion.time", record["time"]),
            ("promotion.champion_version", champion.version if champion else "none"),
        ):
            client.set_model_version_tag(registered_model, version, key, val)
    return record
