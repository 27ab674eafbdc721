"""INT8 serving (skindx.export.quantize) on the packaged test model with its OOD scorer and
real processed images: an ordinary, sealed, servable package comes out, with the scorer refit
on the int8 graph and the test predictions rewritten from it; past the allowed BMA drop the
tool refuses and writes nothing."""

from __future__ import annotations

import json

import pytest

from skindx.evaluation.predictions import PREDICTIONS_FILE, read_predictions
from skindx.export.quantize import QuantizationRefused, main, quantize_package
from skindx.inference.model import load_packaged_model
from tests.serving.conftest import in_process_api, ood_package_dir  # noqa: F401 (fixture)
from tests.serving.hostile_corpus import synthetic_jpeg

pytestmark = pytest.mark.slow


def test_an_accepted_int8_package_is_sealed_servable_and_says_how_it_was_made(
    ood_package_dir,  # noqa: F811
    processed_dir,
    tmp_path,
):
    out = tmp_path / "int8"
    report = quantize_package(
        ood_package_dir, processed_dir, out, max_bma_drop=1.0, calibration_images=16
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]  # no staging left behind
    model = load_packaged_model(out)  # verifies every sha256 and the card's seal
    card = model.card
    assert card["version"] == load_packaged_model(ood_package_dir).version + "-int8"
    quant = card["export"]["quantization"]
    assert quant == report
    assert quant["calibration_split"] == "train" and quant["calibration_images"] == 16
    assert quant["balanced_accuracy_drop"] == pytest.approx(
        quant["balanced_accuracy_fp32"] - quant["balanced_accuracy_int8"], abs=2e-4
    )
    assert 0.0 <= quant["argmax_agreement"] <= 1.0
    # the scorer was fitted again on the int8 graph, and its files replaced the fp32 ones
    assert card["ood"]["threshold"] != load_packaged_model(ood_package_dir).card["ood"]["threshold"]
    assert quant["ood_refit"]["test_rejection_rate"] == quant["ood_test_rejection_int8"]
    assert 0.0 <= quant["ood_test_rejection_int8_with_fp32_scorer"] <= 1.0  # why it was refit
    assert (out / "model.onnx").read_bytes() != (ood_package_dir / "model.onnx").read_bytes()
    predictions = read_predictions(out / PREDICTIONS_FILE)
    assert len(predictions) == quant["test_images"] == 21
    with in_process_api(model_dir=out) as api:
        answer = api.test_client.post(
            "/predict", files={"file": ("lesion.jpg", synthetic_jpeg(1), "image/jpeg")}
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == card["version"]


def test_past_the_allowed_drop_it_refuses_and_writes_nothing(
    ood_package_dir,  # noqa: F811
    processed_dir,
    tmp_path,
    capsys,
):
    with pytest.raises(QuantizationRefused, match="keep serving the fp32 package"):
        quantize_package(
            ood_package_dir, processed_dir, tmp_path / "int8", max_bma_drop=-1.0,
            calibration_images=8,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "taken").mkdir()
    code = main(["--model", str(ood_package_dir), "--processed", str(processed_dir),
                 "--out", str(tmp_path / "taken")])  # fmt: skip
    assert code == 1 and "refused" in capsys.readouterr().out
    assert json.loads((ood_package_dir / "model.json").read_text())["version"] == "ood-test-1"
