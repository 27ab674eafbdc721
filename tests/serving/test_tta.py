"""SKINDX_TTA: the API's probabilities averaged over the upload's 8 dihedral views (one batch),
exactly skindx.inference.tta's; off by default, and each request may choose with `?tta=`.
Batch answers equal one-by-one answers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from skindx.inference.model import load_packaged_model
from skindx.inference.preprocessing import resize_to_contract
from skindx.inference.tta import plain_probabilities, tta_probabilities
from tests.serving.checks import flush, rows
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


@pytest.mark.slow
def test_each_request_chooses_tta_over_the_server_default_and_the_log_records_it(
    packaged_model_dir, synthetic_jpeg, tmp_path
):
    model = load_packaged_model(packaged_model_dir)
    pixels = resize_to_contract(
        Image.open(io.BytesIO(synthetic_jpeg)).convert("RGB"), model.contract
    )
    plain = plain_probabilities(model, pixels[None])[0]
    averaged = tta_probabilities(model, pixels[None])[0]
    files = {"file": ("a.jpg", synthetic_jpeg, "image/jpeg")}
    answers = {}
    db = f"sqlite:///{tmp_path / 'log.db'}"
    with in_process_api(model_dir=packaged_model_dir, tta="true", prediction_db=db) as api:
        client = api.test_client
        assert client.get("/model").json()["serving"] == {"tta": True, "ood_action": "flag"}
        for name, params in (("default", {}), ("off", {"tta": "false"}), ("on", {"tta": "1"})):
            response = client.post(
                "/predict", files=files, params=params, headers={"X-Request-ID": name}
            )
            assert response.status_code == 200, response.text
            answers[name] = response.json()
        batch = client.post(
            "/predict/batch",
            files=[("files", ("b.jpg", synthetic_jpeg, "image/jpeg"))],
            params={"tta": "false"},
            headers={"X-Request-ID": "batch"},
        )
        explained = client.post(
            "/explain", files=files, params={"tta": "false"}, headers={"X-Request-ID": "explain"}
        )
        bad = client.post("/predict", files=files, params={"tta": "maybe"})
        flush(api)
    assert bad.status_code == 422
    assert bad.json()["code"] == "invalid_request" and "tta" in bad.json()["detail"]
    for name, expected, flag in (("default", averaged, True), ("on", averaged, True)):
        assert answers[name]["tta"] is flag
        np.testing.assert_allclose(probabilities(answers[name], model.classes), expected, atol=1e-4)
    off = [answers["off"], batch.json()["results"][0]["prediction"], explained.json()]
    for body in off:
        assert body["tta"] is False
        np.testing.assert_allclose(probabilities(body, model.classes), plain, atol=1e-4)
    logged = {r["request_id"]: r["tta"] for r in rows(db)}
    assert logged == {
        "default": True,
        "off": False,
        "on": True,
        "batch-0": False,
        "explain": False,
    }


@pytest.mark.slow
def test_one_batch_answers_each_item_as_it_asked(packaged_model_dir, synthetic_jpegs):
    """Requests that chose differently can share a batch (the batcher mixes concurrent
    requests): each item gets its own kind of answer, equal to what it would get alone."""
    model = load_packaged_model(packaged_model_dir)
    images = [Image.open(io.BytesIO(data)).convert("RGB") for data in synthetic_jpegs[:3]]
    pixels = np.stack([resize_to_contract(image, model.contract) for image in images])
    with in_process_api(model_dir=packaged_model_dir) as api:
        engine = api.app.state.engine
        choices = [True, False, True]
        items = [engine.prepare(i, tta=c) for i, c in zip(images, choices, strict=True)]
        results = engine._run_batch(items)
    for index, (result, chose) in enumerate(zip(results, choices, strict=True)):
        expected = (tta_probabilities if chose else plain_probabilities)(model, pixels[[index]])
        assert result.tta is chose
        np.testing.assert_allclose(result.probabilities, expected[0], atol=1e-4)
