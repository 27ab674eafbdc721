"""The API marks a prediction `uncertain` below the card's threshold (chosen on validation by
evaluate, skindx.evaluation.selective), and never without one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from skindx.export.card import write_card
from tests.serving.conftest import in_process_api


def with_threshold(packaged_model_dir: Path, dest: Path, threshold: float) -> Path:
    pkg = shutil.copytree(packaged_model_dir, dest)
    card = json.loads((pkg / "model.json").read_text())
    card["uncertainty"] = {"threshold": threshold, "score": "calibrated top-1 probability"}
    write_card(card, pkg)
    return pkg


def predict(model_dir: Path, image: bytes) -> dict:
    with in_process_api(model_dir=model_dir) as api:
        response = api.test_client.post(
            "/predict", files={"file": ("lesion.jpg", image, "image/jpeg")}
        )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_uncertain_below_the_threshold_and_not_above(
    packaged_model_dir: Path, synthetic_jpeg: bytes, tmp_path: Path
):
    plain = predict(packaged_model_dir, synthetic_jpeg)
    assert plain["uncertain"] is False and plain["uncertainty_threshold"] is None
    confidence = plain["confidence"]
    high = predict(
        with_threshold(packaged_model_dir, tmp_path / "high", confidence + 0.01), synthetic_jpeg
    )
    assert high["uncertain"] is True and high["uncertainty_threshold"] == confidence + 0.01
    low = predict(
        with_threshold(packaged_model_dir, tmp_path / "low", confidence - 0.01), synthetic_jpeg
    )
    assert low["uncertain"] is False and low["predicted_class"] == plain["predicted_class"]
