"""The torch-free loader: integrity checks, the preprocessing contract, temperature, parity
with the torch evaluate path on real full-resolution images, and no torch import."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from skindx.export.card import write_card
from skindx.inference import normalize, resize_to_contract
from skindx.inference.model import (
    ModelIntegrityError,
    card_digest,
    load_packaged_model,
    softmax,
    verify_package,
)


@pytest.fixture
def package_copy(packaged_model_dir, tmp_path):
    return shutil.copytree(packaged_model_dir, tmp_path / "model")


def _edit_card(path, change):
    """Repackage the card with `change` applied (sealed again, as a build would)."""
    card = json.loads((path / "model.json").read_text())
    change(card)
    write_card(card, path)


def test_inference_never_imports_torch():
    code = (
        "import skindx.inference, skindx.inference.model, skindx.inference.cam, sys; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_loads_and_predicts_calibrated_probabilities(packaged_model_dir):
    model = load_packaged_model(packaged_model_dir)
    assert model.version == "test-1" and model.temperature == 1.5
    assert model.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    size = model.contract.input_size
    images = np.random.default_rng(0).integers(0, 256, (5, size, size, 3), dtype=np.uint8)
    probs, features = model.predict(images)
    assert probs.shape == (5, 7) and features.shape[:2] == (5, model.cam_weight.shape[1])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    logits, _ = model.run(normalize(images, model.contract))
    np.testing.assert_allclose(probs, softmax(logits, 1.5), atol=1e-6)
    assert not np.allclose(probs, softmax(logits, 1.0), atol=1e-3), "temperature had no effect"
    # The features and the CAM head reproduce the logits: the head in the card is the model's.
    pooled = features.mean(axis=(2, 3))
    np.testing.assert_allclose(pooled @ model.cam_weight.T + model.cam_bias, logits, atol=1e-4)
    cam = model.cam(features[0], int(probs[0].argmax()))
    assert cam.shape == (size, size) and cam.min() >= 0 and cam.max() <= 1


def test_wrong_input_size_is_refused(packaged_model_dir):
    model = load_packaged_model(packaged_model_dir)
    with pytest.raises(ValueError, match="expected input of shape"):
        model.predict(np.zeros((1, 48, 48, 3), np.uint8))


def test_torch_evaluate_path_and_inference_agree_on_fullres_images(
    packaged_model_dir, fullres_images
):
    """The 70 original 600x450 images through the shared preprocessing, then torch (evaluate's
    predict_logits on the packaged weights) vs ONNX Runtime (skindx.inference)."""
    from safetensors.torch import load_file

    from skindx.models import build_model
    from skindx.models.predict import predict_logits

    served = load_packaged_model(packaged_model_dir)
    assert len(fullres_images) == 70
    images = np.stack([resize_to_contract(Image.open(p), served.contract) for p in fullres_images])
    torch_model = build_model("resnet18", num_classes=7, weights="none")
    torch_model.load_state_dict(load_file(str(packaged_model_dir / "weights.safetensors")))
    torch_probs = softmax(
        predict_logits(torch_model, images, served.contract, 32), served.temperature
    )
    onnx_probs, _ = served.predict(images)
    assert np.abs(torch_probs - onnx_probs).max() <= 1e-4
    assert len(set(onnx_probs.argmax(axis=1))) > 1, "degenerate model: the comparison is weak"


def test_tampered_file_is_refused(package_copy):
    with (package_copy / "model.onnx").open("r+b") as fh:
        fh.seek(-64, 2)
        fh.write(b"\0" * 8)
    with pytest.raises(ModelIntegrityError, match=r"model\.onnx: sha256 .* does not match"):
        load_packaged_model(package_copy)


def test_missing_file_is_refused(package_copy):
    (package_copy / "cam_head.npy").unlink()
    with pytest.raises(ModelIntegrityError, match=r"cam_head\.npy: missing"):
        load_packaged_model(package_copy)


def test_every_problem_is_named_at_once(package_copy):
    (package_copy / "weights.safetensors").unlink()
    (package_copy / "cam_head.npy").write_bytes(b"not numpy")
    with pytest.raises(ModelIntegrityError) as err:
        verify_package(package_copy)
    assert "weights.safetensors: missing" in str(err.value)
    assert "cam_head.npy: sha256" in str(err.value)


def test_missing_card_is_refused(package_copy):
    (package_copy / "model.json").unlink()
    with pytest.raises(ModelIntegrityError, match="model.json not found"):
        load_packaged_model(package_copy)


def test_card_that_drops_the_onnx_hash_is_refused(package_copy):
    _edit_card(package_copy, lambda card: card["files"].pop("model.onnx"))
    with pytest.raises(ModelIntegrityError, match="model.onnx: required but not listed"):
        load_packaged_model(package_copy)


def test_card_cannot_point_outside_the_package(package_copy, tmp_path):
    (tmp_path / "secret").write_text("x")
    _edit_card(package_copy, lambda card: card["files"].update({"../secret": "0" * 64}))
    with pytest.raises(ModelIntegrityError, match="not a plain file name"):
        verify_package(package_copy)


@pytest.mark.parametrize(
    "edit",
    [
        lambda card: card.update(temperature=card["temperature"] * 2),
        lambda card: card.update(classes=card["classes"][::-1]),
        lambda card: card["preprocessing"].update(input_size=64),
    ],
    ids=["temperature", "class order", "input size"],
)
def test_a_card_edited_by_hand_is_refused(package_copy, edit):
    card = json.loads((package_copy / "model.json").read_text())
    edit(card)
    (package_copy / "model.json").write_text(json.dumps(card, indent=2))  # not resealed
    with pytest.raises(ModelIntegrityError, match=r"model\.json: its content .* does not match"):
        load_packaged_model(package_copy)


def test_a_sealed_card_survives_the_json_round_trip(package_copy):
    """The seal is computed on what a reader loads: NaN, numpy floats, tuples, int keys and
    non-ASCII text all come back with the same digest."""

    def odd_values(card):
        card["metrics"]["undefined"] = float("nan")
        card["metrics"]["float32"] = np.float32(0.1)
        card["lineage"]["shape"] = (1, 2)
        card["lineage"]["by_index"] = {1: "one"}
        card["lineage"]["note"] = "mélanome \ud800"

    _edit_card(package_copy, odd_values)
    card = verify_package(package_copy)
    assert card["card_sha256"] == card_digest(card)


def test_the_card_digest_ignores_layout_but_not_content(package_copy, caplog):
    card = json.loads((package_copy / "model.json").read_text())
    assert card["card_sha256"] == card_digest(card)
    # key order and whitespace are not content
    (package_copy / "model.json").write_text(json.dumps(dict(reversed(card.items()))))
    verify_package(package_copy)

    # a package sealed before this existed (still in registries) is served, with a warning
    del card["card_sha256"]
    (package_copy / "model.json").write_text(json.dumps(card))
    verify_package(package_copy)
    assert "has no card_sha256" in caplog.text


def test_corrupt_card_is_refused(package_copy):
    (package_copy / "model.json").write_text("{not json")
    with pytest.raises(ModelIntegrityError, match="not valid JSON"):
        load_packaged_model(package_copy)
