"""The API marks a prediction `uncertain` below the card's threshold (chosen on validation by
evaluate, skindx.evaluation.selective), and never without one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from skindx.export.card import write_card
from tests.serving.conftest import in_process_api


def with_threshold(
    packaged_model_dir: Path, dest: Path, threshold: float, tta: float | None = None
) -> Path:
    pkg = shutil.copytree(packaged_model_dir, dest)
    card = json.loads((pkg / "model.json").read_text())
    card["uncertainty"] = {"threshold": threshold, "score": "calibrated top-1 probability"}
    if tta is not None:
        card["uncertainty"]["tta"] = {"threshold": tta, "score": "calibrated top-1 probability"}
    write_card(card, pkg)
    return pkg


def predict(model_dir: Path, image: bytes, **params: str) -> dict:
    with in_process_api(model_dir=model_dir) as api:
        response = api.test_client.post(
            "/predict", files={"file": ("lesion.jpg", image, "image/jpeg")}, params=params
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


@pytest.mark.slow
def test_a_tta_answer_is_held_to_the_threshold_chosen_on_the_views(
    packaged_model_dir: Path, synthetic_jpeg: bytes, tmp_path: Path
):
    averaged = predict(packaged_model_dir, synthetic_jpeg, tta="true")["confidence"]
    # plain threshold above the answer, TTA threshold below it: the TTA answer is certain
    pkg = with_threshold(packaged_model_dir, tmp_path / "both", 1.0, tta=averaged - 0.01)
    answer = predict(pkg, synthetic_jpeg, tta="true")
    assert answer["tta"] is True and answer["uncertain"] is False
    assert answer["uncertainty_threshold"] == averaged - 0.01
    assert predict(pkg, synthetic_jpeg)["uncertain"] is True  # the plain answer keeps 1.0
    # a card without a TTA threshold holds TTA answers to the plain one
    only_plain = with_threshold(packaged_model_dir, tmp_path / "plain", 1.0)
    assert predict(only_plain, synthetic_jpeg, tta="true")["uncertainty_threshold"] == 1.0
