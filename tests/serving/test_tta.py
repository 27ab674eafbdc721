"""SKINDX_TTA: the API's probabilities averaged over the upload's 8 dihedral views (one batch),
exactly skindx.inference.tta's; off by default. Batch answers equal one-by-one answers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from skindx.inference.model import load_packaged_model
from skindx.inference.preprocessing import resize_to_contract
from skindx.inference.tta import plain_probabilities, tta_probabilities
from tests.serving.conftest import in_process_api


def probabilities(answer: dict, classes: list[str]) -> np.ndarray:
    by_code = {p["code"]: p["probability"] for p in answer["probabilities"]}
    return np.array([by_code[c] for c in classes])


@pytest.mark.slow
def test_tta_answers_the_mean_over_the_views_and_is_off_by_default(
    packaged_model_dir, synthetic_jpeg
):
    model = load_packaged_model(packaged_model_dir)
    pixels = resize_to_contract(
        Image.open(io.BytesIO(synthetic_jpeg)).convert("RGB"), model.contract
    )
    expected = {
        "false": plain_probabilities(model, pixels[None])[0],
        "true": tta_probabilities(model, pixels[None])[0],
    }
    assert not np.allclose(expected["false"], expected["true"], atol=1e-3)
    answers = {}
    for tta in ("default", "false", "true"):
        settings = {} if tta == "default" else {"tta": tta}
        with in_process_api(model_dir=packaged_model_dir, **settings) as api:
            client = api.test_client
            one = client.post("/predict", files={"file": ("a.jpg", synthetic_jpeg, "image/jpeg")})
            batch = client.post(
                "/predict/batch",
                files=[("files", (f"{i}.jpg", synthetic_jpeg, "image/jpeg")) for i in range(3)],
            )
        assert one.status_code == 200 and batch.status_code == 200, (one.text, batch.text)
        answers[tta] = probabilities(one.json(), model.classes)
        for item in batch.json()["results"]:  # the views of each image, not of the batch
            np.testing.assert_allclose(
                probabilities(item["prediction"], model.classes), answers[tta], atol=1e-4
            )
    np.testing.assert_allclose(answers["default"], expected["false"], atol=1e-4)
    np.testing.assert_allclose(answers["false"], expected["false"], atol=1e-4)
    np.testing.assert_allclose(answers["true"], expected["true"], atol=1e-4)
