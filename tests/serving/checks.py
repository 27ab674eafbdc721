"""What a correct answer of the API looks like, shared by the in-process and the uvicorn tests."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, select

from serving.predlog.models import predictions
from skindx.inference.classes import CLASS_CODES, CLASS_INFO


def post_image(
    server,
    data: bytes,
    filename="lesion.jpg",
    content_type="image/jpeg",
    path="/predict",
    **kwargs,
):
    """POST one file as the `file` field to a Server or an InProcessApi."""
    with server.client() as client:
        return client.post(path, files={"file": (filename, data, content_type)}, **kwargs)


def rows(db_url: str) -> list[dict]:
    """Every record of the prediction log at `db_url`."""
    engine = create_engine(db_url)
    with engine.connect() as connection:
        found = [dict(r._mapping) for r in connection.execute(select(predictions))]
    engine.dispose()
    return found


def flush(api) -> None:
    """Wait until an InProcessApi's prediction-log writer has written what it was given."""
    assert api.app.state.prediction_log.flush(30), "the writer did not catch up in 30 s"


def probabilities(body: dict) -> np.ndarray:
    return np.array([p["probability"] for p in body["probabilities"]])


def assert_prediction(body: dict, version: str) -> None:
    assert [p["code"] for p in body["probabilities"]] == list(CLASS_CODES)
    probs = probabilities(body)
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    best = CLASS_CODES[int(probs.argmax())]
    info = CLASS_INFO[best]
    assert body["predicted_class"] == best
    assert body["predicted_name"] == info.name
    assert body["confidence"] == pytest.approx(probs.max())
    assert (body["risk_group"], body["urgency"]) == (info.risk_group, info.urgency)
    assert body["model_version"] == version
    assert body["processing_time_ms"] > 0


def expected_probabilities(model_dir: Path, jpeg: bytes, temperature: float | None = None):
    """The package's calibrated probabilities for `jpeg`, computed in-process."""
    from skindx.inference import preprocess
    from skindx.inference.model import load_packaged_model, softmax

    model = load_packaged_model(model_dir)
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    logits, _ = model.run(preprocess([image], model.contract))
    t = model.temperature if temperature is None else temperature
    return softmax(logits, t)[0], model.temperature


def check_calibration(server, jpeg: bytes, model_dir: Path) -> None:
    """The API's probabilities are the package's, at the card's temperature (not at 1)."""
    expected, temperature = expected_probabilities(model_dir, jpeg)
    uncalibrated, _ = expected_probabilities(model_dir, jpeg, temperature=1.0)
    assert temperature != 1.0
    body = post_image(server, jpeg).json()
    np.testing.assert_allclose(probabilities(body), expected, atol=1e-5)
    assert not np.allclose(probabilities(body), uncalibrated, atol=1e-4)


def expected_overlay(model_dir: Path, jpeg: bytes, class_code: str, size: int = 448) -> np.ndarray:
    """The Grad-CAM overlay computed in-process with skindx.inference."""
    from skindx.inference import resize_to_contract
    from skindx.inference.cam import overlay
    from skindx.inference.model import load_packaged_model

    model = load_packaged_model(model_dir)
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    pixels = resize_to_contract(image, model.contract)
    view = resize_to_contract(image, dataclasses.replace(model.contract, input_size=size))
    cam, _, _ = model.explain(pixels, model.classes.index(class_code), size=(size, size))
    return overlay(view, cam)


def decode_png(body: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(body["heatmap_png_base64"])))


def check_explain(server, jpeg: bytes, model_dir: Path, version: str) -> None:
    """/explain: the prediction, the overlay of the predicted class and of another one, and a
    refused unknown target."""
    response = post_image(server, jpeg, path="/explain")
    assert response.status_code == 200, response.text
    body = response.json()
    assert_prediction(body, version)
    assert body["explained_class"] == body["predicted_class"]
    card = json.loads((model_dir / "model.json").read_text())
    assert body["cam_layer"] == card["cam"].get("layer", "layer4")  # layer3 when layer4 is coarse
    png = decode_png(body)
    assert (png.format, png.mode, png.size) == ("PNG", "RGB", (448, 448))
    expected = expected_overlay(model_dir, jpeg, body["predicted_class"])
    assert np.abs(np.asarray(png, np.int16) - expected).max() <= 1
    # another class: another map
    other = next(c for c in CLASS_CODES if c != body["predicted_class"])
    explained = post_image(server, jpeg, path="/explain", params={"target": other})
    assert explained.json()["explained_class"] == other
    other_png = np.asarray(decode_png(explained.json()), np.int16)
    assert np.abs(other_png - expected_overlay(model_dir, jpeg, other)).max() <= 1
    assert np.abs(other_png - np.asarray(png, np.int16)).mean() > 1
    bad = post_image(server, jpeg, path="/explain", params={"target": "cancer"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"


def check_batch(server, images: list[tuple[str, bytes]], not_an_image: bytes, version: str):
    """A batch of good images with a text file second: each gets its own result, and an image
    gets the same answer alone and in the batch."""
    files = [("files", (name, data, "image/jpeg")) for name, data in images]
    files.insert(1, ("files", ("notes.jpg", not_an_image, "image/jpeg")))
    with server.client() as client:
        response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["filename"] for r in body["results"]] == [f[1][0] for f in files]
    bad = body["results"][1]
    assert bad["status_code"] == 415 and bad["prediction"] is None
    assert bad["error"]["code"] == "unsupported_media_type"
    for good in body["results"][:1] + body["results"][2:]:
        assert good["status_code"] == 200 and good["error"] is None
        assert_prediction(good["prediction"], version)
    assert body["model_version"] == version
    # the same image alone and within a batch gets the same answer
    alone = post_image(server, images[0][1]).json()
    np.testing.assert_allclose(
        probabilities(body["results"][0]["prediction"]), probabilities(alone), atol=1e-5
    )
