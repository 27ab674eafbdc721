"""Where a model's initial weights come from: the pretrain stage's manifest.

The pretrain stage (skindx.pretrain, docs/pretraining.md) writes `paths.pretrain_dir`:
  - off (`pretrain.enabled: false`): `pretrain.json` = {"enabled": false} and nothing else, the
    same bytes every time, so that train, which depends on the folder, never reruns for it;
  - on: `backbone.pt` (a plain backbone state dict: every tensor of `build_model(arch)` but the
    `fc.*` head), `history.csv` and `pretrain.json` naming the run that made it (MLflow run id,
    data hash, git commit, splits, sha256 of backbone.pt).

`model.weights=<dir>/backbone.pt` loads the backbone (skindx.models.factory: strict about
every backbone key, a new head); `pretrain_lineage(model.weights)` is what the train run and
the model card record about it. This module is torch-free: the pretrain stage writes its
"off" marker without importing torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MANIFEST_FILE = "pretrain.json"
BACKBONE_FILE = "backbone.pt"
HISTORY_FILE = "history.csv"
DISABLED_MANIFEST: dict[str, Any] = {"enabled": False}
# what the train run's MLflow tags carry (tag -> manifest key)
LINEAGE_TAGS = {
    "pretrain_run_id": "mlflow_run_id",
    "pretrain_data_hash": "data_hash",
    "pretrain_method": "method",
    "pretrain_weights_sha256": "weights_sha256",
}


class PretrainLineageError(ValueError):
    """The pretrained backbone does not match the manifest that names its run."""


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> Path:
    """`pretrain.json` in `directory`, written atomically, keys sorted (the "off" marker is
    byte-identical from run to run)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MANIFEST_FILE
    tmp = path.with_name(f".{MANIFEST_FILE}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The manifest in `directory`, None when there is none (or it is not JSON)."""
    path = Path(directory) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _as_path(weights: str | Path | None) -> Path | None:
    if weights is None or str(weights).lower() in {"none", "imagenet"}:
        return None
    return Path(weights)


def missing_weights_hint(weights: str | Path) -> str:
    """Why a `model.weights` file is absent, when its folder says: the pretrain stage is off."""
    path = Path(weights)
    manifest = read_manifest(path.parent)
    if manifest is not None and not manifest.get("enabled"):
        return (
            f" {path.parent} is the pretrain stage's output and the stage is off "
            "(pretrain.enabled=false), so it wrote no backbone: turn it on with "
            "`dvc exp run -S pretrain=simclr` (or pretrain.enabled=true), or set "
            "model.weights=none."
        )
    return ""


def pretrain_lineage(weights: str | Path | None) -> dict[str, Any] | None:
    """What the train run records about a backbone from the pretrain stage: its manifest
    (mlflow_run_id, data_hash, method, arch, splits, ...), after checking that `weights` is the
    file the manifest names and still has its sha256. None for `none`, `imagenet` or a state
    dict without a manifest beside it (a user's own file)."""
    path = _as_path(weights)
    if path is None or not path.is_file():
        return None
    manifest = read_manifest(path.parent)
    if manifest is None or not manifest.get("enabled") or manifest.get("weights") != path.name:
        return None
    from skindx.inference.hashing import sha256_file

    digest = sha256_file(path)
    if digest != manifest.get("weights_sha256"):
        raise PretrainLineageError(
            f"{path} has sha256 {digest[:12]}…, but {path.parent / MANIFEST_FILE} names "
            f"{str(manifest.get('weights_sha256'))[:12]}…: the file was changed after the "
            "pretrain stage wrote it. Rerun it (dvc repro pretrain) or point model.weights "
            "elsewhere."
        )
    return dict(manifest)


def lineage_tags(lineage: dict[str, Any] | None) -> dict[str, str]:
    """The train run's MLflow tags for a pretrained backbone (empty without one)."""
    if not lineage:
        return {}
    return {tag: str(lineage.get(key)) for tag, key in LINEAGE_TAGS.items()}
