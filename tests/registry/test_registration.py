"""Registration in a real MLflow SQLite registry: tags, signature, stored package, lineage
(moved from tests/test_registry.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from skindx.export.card import write_card
from skindx.inference import verify_package
from skindx.registry import (
    register_package,
)
from tests.registry.conftest import MODEL

# each test drives a real MLflow registry (seconds apiece): in `make test`, not test-fast
pytestmark = pytest.mark.slow


def test_register_tags_metrics_signature_and_stores_the_package(registered):
    import mlflow
    from mlflow import MlflowClient

    root, packages = registered
    pkg, reg = packages["high"]
    assert reg.version == "3"
    card = json.loads((pkg / "model.json").read_text())
    assert card["version"] == "3" and card["registry"]["model_uri"] == f"models:/{MODEL}/3"
    verify_package(pkg)  # rewriting the card kept every file hash valid
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    version = client.get_model_version(MODEL, "3")
    assert float(version.tags["metric.balanced_accuracy"]) == pytest.approx(0.6)
    assert float(version.tags["metric.per_class.mel.recall"]) == pytest.approx(0.4)
    assert version.tags["onnx_sha256"] == card["files"]["model.onnx"]
    assert version.tags["card_sha256"] == card["card_sha256"]  # the card as sealed, v3 in it
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    info = mlflow.models.get_model_info(f"models:/{MODEL}/3")
    inputs = info.signature.inputs.to_dict()
    assert inputs[0]["name"] == "input" and list(inputs[0]["tensor-spec"]["shape"]) == [
        -1,
        3,
        32,
        32,
    ]
    assert [o["name"] for o in info.signature.outputs.to_dict()] == ["logits", "features"]
    artifacts = client.list_artifacts(reg.run_id, "packages/v3")
    assert {Path(a.path).name for a in artifacts} == {
        "model.json",
        "model.onnx",
        "weights.safetensors",
        "cam_head.npy",
        "cam.onnx",  # 32 px: layer4 is 1x1, so the package explains on layer3 (issue 12)
    }


def test_lineage_names_the_run_actually_used(store, tmp_path):
    packages, params, root = store
    pkg = shutil.copytree(packages["low"], tmp_path / "again")
    missing = "0" * 32
    card = json.loads((pkg / "model.json").read_text())
    card["lineage"]["mlflow_run_id"] = missing
    write_card(card, pkg)
    reg = register_package(pkg, MODEL, run_id=missing, mlflow_params=params)
    card = json.loads((pkg / "model.json").read_text())
    assert reg.run_id != missing
    assert card["lineage"]["mlflow_run_id"] == reg.run_id == card["registry"]["run_id"]
