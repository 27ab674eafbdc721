"""build_package: the files, the card (docs/contracts.md), the weights and the CAM head."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skindx.export import package as package_module
from skindx.export.package import build_package
from skindx.export.parity import ParityError
from skindx.inference import CLASS_CODES, PreprocessingContract, verify_package

CARD_KEYS = {
    "name",
    "version",
    "created",
    "classes",
    "preprocessing",
    "temperature",
    "metrics",
    "lineage",
    "files",
    "outputs",
    "cam",
    "intended_use",
    "not_a_medical_device",
    "training_data",
    "limitations",
}


@pytest.fixture(scope="module")
def card(packaged_model_dir):
    return json.loads((packaged_model_dir / "model.json").read_text())


def test_package_holds_the_contracted_files(packaged_model_dir, card):
    names = sorted(p.name for p in packaged_model_dir.iterdir())
    # cam.onnx: at 32 px layer4 is 1x1, so the package explains on layer3 (issue 12)
    assert names == ["cam.onnx", "cam_head.npy", "model.json", "model.onnx", "weights.safetensors"]
    assert card["cam"]["layer"] == "layer3" and card["cam"]["grid"] == [2, 2]
    assert set(card["files"]) == set(names) - {"model.json"}
    for name, digest in card["files"].items():
        assert hashlib.sha256((packaged_model_dir / name).read_bytes()).hexdigest() == digest
    verify_package(packaged_model_dir)


def test_card_has_the_contracted_keys(card):
    assert CARD_KEYS <= set(card)
    assert card["version"] == "test-1" and card["name"] == "skindx-resnet50"
    assert card["outputs"] == ["logits", "features", "pooled"]
    assert card["cam"]["head"] == "cam_head.npy"
    assert card["temperature"] == 1.5 and card["metrics"]["balanced_accuracy"] == 0.5
    assert set(card["lineage"]) >= {"git_commit", "mlflow_run_id", "data_hash", "params"}
    assert dt.datetime.fromisoformat(card["created"]).tzinfo is not None
    assert PreprocessingContract.from_dict(card["preprocessing"]) == PreprocessingContract(32)
    assert card["preprocessing"]["channel_order"] == "RGB"
    assert card["architecture"]["arch"] == "resnet18" and card["export"]["opset"] >= 17


def test_card_classes_and_risk_groups(card):
    assert [c["code"] for c in card["classes"]] == list(CLASS_CODES)
    groups = {c["code"]: c["risk_group"] for c in card["classes"]}
    assert {k for k, v in groups.items() if v == "malignant"} == {"mel", "bcc"}
    assert {k for k, v in groups.items() if v == "pre-cancerous"} == {"akiec"}
    assert {k for k, v in groups.items() if v == "benign"} == {"bkl", "df", "nv", "vasc"}
    assert all(c["name"] for c in card["classes"])


def test_card_text_sections(card):
    assert "NOT a medical device" in card["not_a_medical_device"]
    data = card["training_data"]
    assert "HAM10000" in data["dataset"] and "CC BY-NC 4.0" in data["licence"]
    assert "Tschandl" in data["citation"] and "180161" in data["citation"]
    assert card["intended_use"]["out_of_scope"] and len(card["limitations"]) >= 3


def test_weights_and_cam_head_are_the_models(packaged_model_dir, untrained_model_factory):
    from safetensors.torch import load_file

    from skindx.models import build_model

    original = untrained_model_factory()  # the fixture's model (same seed)
    reloaded = build_model("resnet18", weights="none").eval()
    reloaded.load_state_dict(load_file(str(packaged_model_dir / "weights.safetensors")))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(reloaded(x).numpy(), original(x).numpy(), atol=1e-6)
    head = np.load(packaged_model_dir / "cam_head.npy")
    fc = original.fc[-1]
    assert head.shape == (7, 513)
    np.testing.assert_allclose(head[:, :512], fc.weight.detach().numpy())
    np.testing.assert_allclose(head[:, 512], fc.bias.detach().numpy())


@pytest.mark.slow
def test_parity_images_are_checked_and_reported(untrained_model_factory, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    out = build_package(
        untrained_model_factory(), PreprocessingContract(32), tmp_path / "pkg", parity_images=images
    )
    parity = json.loads((out / "model.json").read_text())["export"]["parity"]
    assert parity["n_images"] == 4 and parity["max_abs_diff"] <= 1e-4


def test_failed_parity_writes_nothing(untrained_model_factory, tmp_path, monkeypatch):
    """Fault injection: the exporter writes another model's graph."""
    real_export = package_module.export_onnx

    def broken_export(model, path, input_size, **kwargs):
        return real_export(untrained_model_factory(seed=7), path, input_size, **kwargs)

    monkeypatch.setattr(package_module, "export_onnx", broken_export)
    out = tmp_path / "candidate"
    out.mkdir()
    (out / "previous.txt").write_text("old package")
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ParityError):
        build_package(
            untrained_model_factory(), PreprocessingContract(32), out, parity_images=images
        )
    assert [p.name for p in out.iterdir()] == ["previous.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["candidate"]  # no staging dir left behind


def test_package_stage_takes_the_contract_and_classes_from_the_checkpoint():
    from skindx.export.stage import checkpoint_contract  # was in pipelines/package.py

    trained = PreprocessingContract(input_size=48, resize_policy="stretch")
    checkpoint = {"config": {"classes": list(CLASS_CODES), "contract": trained.to_dict()}}
    assert checkpoint_contract(checkpoint, Path("best.pt")) == trained
    checkpoint["config"]["classes"] = list(reversed(CLASS_CODES))
    with pytest.raises(ValueError, match="trained on classes"):
        checkpoint_contract(checkpoint, Path("best.pt"))
