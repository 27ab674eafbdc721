"""The API over real HTTP (uvicorn on 127.0.0.1) on a real packaged ONNX model."""

from __future__ import annotations

import base64
import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skindx.inference.classes import CLASS_CODES, CLASS_INFO
from tests.serving.conftest import Server, run_server
from tests.serving.hostile_corpus import Upload, encode, exif_rotated_jpeg, hostile_corpus

pytestmark = pytest.mark.slow  # starts real servers


@pytest.fixture(scope="module")
def corpus(sample_jpeg: bytes) -> dict[str, Upload]:
    return {u.name: u for u in hostile_corpus(sample_jpeg)}


def post_image(
    server: Server,
    data: bytes,
    filename="lesion.jpg",
    content_type="image/jpeg",
    path="/predict",
    **kwargs,
):
    with server.client() as client:
        return client.post(path, files={"file": (filename, data, content_type)}, **kwargs)


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


def test_health_ready_and_docs(server: Server):
    with server.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").json() == {"status": "ready", "model_version": "test-1"}
        docs = client.get("/api-docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        paths = client.get("/openapi.json").json()["paths"]
        for path in ("/predict", "/predict/batch", "/explain", "/model", "/ready", "/health"):
            assert path in paths


def test_full_resolution_sample_predicts(server: Server, fullres_images: list[Path]):
    for image_path in fullres_images[:3]:
        response = post_image(server, image_path.read_bytes(), image_path.name)
        assert response.status_code == 200, response.text
        assert_prediction(response.json(), "test-1")


def test_prediction_is_calibrated_with_the_cards_temperature(
    server: Server, sample_jpeg: bytes, packaged_model_dir: Path
):
    from skindx.inference import preprocess
    from skindx.inference.model import load_packaged_model, softmax

    model = load_packaged_model(packaged_model_dir)
    image = Image.open(io.BytesIO(sample_jpeg)).convert("RGB")
    logits, _ = model.run(preprocess([image], model.contract))
    assert model.temperature != 1.0
    expected = softmax(logits, model.temperature)[0]
    body = post_image(server, sample_jpeg).json()
    np.testing.assert_allclose(probabilities(body), expected, atol=1e-5)
    assert not np.allclose(probabilities(body), softmax(logits)[0], atol=1e-4)


HOSTILE = [
    "truncated_jpeg",
    "zero_bytes",
    "text_named_jpg",
    "noise_12mb",
    "png_30000x30000",
    "png_tiny_16px",
    "gif",
    "svg",
    "html",
    "cmyk_jpeg",
    "png_16bit_gray",
    "png_16bit_rgb",
    "rgba_png",
    "grayscale_jpeg",
    "palette_png",
    "webp",
    "jpeg_named_png",
    "exif_rotated_jpeg",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_corpus(server: Server, corpus: dict[str, Upload], name: str):
    upload = corpus[name]
    response = post_image(server, upload.data, upload.filename, upload.content_type)
    assert response.status_code == upload.status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    if upload.status == 200:
        assert_prediction(body, "test-1")
    else:
        assert set(body) == {"detail", "code"}
        assert body["code"] == upload.code
        assert upload.message in body["detail"]
        assert "Traceback" not in body["detail"]


def test_corpus_covers_every_case(corpus: dict[str, Upload]):
    assert sorted(corpus) == sorted(HOSTILE)


def test_exif_orientation_is_applied(server: Server, sample_jpeg: bytes):
    upright = Image.open(io.BytesIO(sample_jpeg)).convert("RGB")
    tagged = probabilities(post_image(server, exif_rotated_jpeg(upright)).json())
    plain = probabilities(
        post_image(server, encode(upright, "JPEG", quality=100, subsampling=0)).json()
    )
    stored_as_is = upright.transpose(Image.Transpose.ROTATE_90)  # what ignoring EXIF would see
    ignored = probabilities(post_image(server, encode(stored_as_is, "JPEG", quality=100)).json())
    assert np.abs(tagged - plain).max() < 0.2 * np.abs(ignored - plain).max()


def test_oversized_body_is_refused_before_it_is_uploaded(server: Server):
    """A 12 MB Content-Length gets 413 after only a few KB were sent."""
    host, port = server.url.removeprefix("http://").split(":")
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    request = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {12 * 1024 * 1024}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request + head + b"\xff\xd8\xff" + b"\0" * 4096)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert b" 413 " in status_line, reply[:500]
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert body["code"] == "request_too_large" and "10 MB" in body["detail"]


def test_missing_file_field_is_a_clear_422(server: Server):
    with server.client() as client:
        for response in (client.post("/predict"), client.post("/predict", data={"other": "x"})):
            assert response.status_code == 422
            body = response.json()
            assert body["code"] == "invalid_request" and "file" in body["detail"]


def test_unknown_route_and_wrong_method_are_json(server: Server):
    with server.client() as client:
        missing = client.get("/nope")
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
        wrong = client.get("/predict")
        assert (wrong.status_code, wrong.json()["code"]) == (405, "method_not_allowed")


def test_batch_classifies_each_file_and_reports_bad_ones(server: Server, corpus, fullres_images):
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in fullres_images[:3]]
    files.insert(1, ("files", ("notes.jpg", corpus["text_named_jpg"].data, "image/jpeg")))
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
        assert_prediction(good["prediction"], "test-1")
    assert body["model_version"] == "test-1"
    # the same image alone and within a batch gets the same answer
    alone = post_image(server, fullres_images[0].read_bytes()).json()
    np.testing.assert_allclose(
        probabilities(body["results"][0]["prediction"]), probabilities(alone), atol=1e-5
    )


def test_batch_where_no_file_is_an_image_fails_as_a_whole(server: Server, corpus):
    files = [
        ("files", ("a.gif", corpus["gif"].data, "image/gif")),
        ("files", ("b.svg", corpus["svg"].data, "image/svg+xml")),
    ]
    with server.client() as client:
        same = client.post("/predict/batch", files=files)
        files.append(("files", ("c.jpg", b"", "image/jpeg")))
        mixed = client.post("/predict/batch", files=files)
    assert same.status_code == 415, same.text
    assert same.json()["code"] == "unsupported_media_type"
    assert "'a.gif'" in same.json()["detail"] and "SVG" in same.json()["detail"]
    assert mixed.status_code == 422 and mixed.json()["code"] == "no_valid_files"
    assert "'c.jpg': the uploaded file is empty" in mixed.json()["detail"]


def test_batch_with_too_many_files_is_413(server: Server, corpus):
    tiny = corpus["webp"].data
    files = [("files", (f"{i}.webp", tiny, "image/webp")) for i in range(17)]
    with server.client() as client:
        response = client.post("/predict/batch", files=files)
    assert response.status_code == 413
    assert response.json()["code"] == "too_many_files"
    assert "at most 16" in response.json()["detail"]


@pytest.fixture(scope="module")
def server_64(packaged_model_dir_64: Path, tmp_path_factory) -> Server:
    with run_server(tmp_path_factory.mktemp("server64"), model_dir=packaged_model_dir_64) as srv:
        yield srv


def expected_overlay(model_dir: Path, jpeg: bytes, class_code: str, size: int = 448) -> np.ndarray:
    """The Grad-CAM overlay computed in-process with skindx.inference."""
    import dataclasses

    from skindx.inference import preprocess, resize_to_contract
    from skindx.inference.cam import overlay
    from skindx.inference.model import load_packaged_model

    model = load_packaged_model(model_dir)
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    _, features = model.run(preprocess([image], model.contract))
    view = resize_to_contract(image, dataclasses.replace(model.contract, input_size=size))
    cam = model.cam(features[0], model.classes.index(class_code), size=(size, size))
    return overlay(view, cam)


def decode_png(body: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(body["heatmap_png_base64"])))


def test_explain_returns_a_cam_overlay_png(
    server_64: Server, sample_jpeg: bytes, packaged_model_dir_64: Path
):
    response = post_image(server_64, sample_jpeg, path="/explain")
    assert response.status_code == 200, response.text
    body = response.json()
    assert_prediction(body, "test-2-64px")
    assert body["explained_class"] == body["predicted_class"]
    png = decode_png(body)
    assert (png.format, png.mode, png.size) == ("PNG", "RGB", (448, 448))
    expected = expected_overlay(packaged_model_dir_64, sample_jpeg, body["predicted_class"])
    assert np.abs(np.asarray(png, np.int16) - expected).max() <= 1
    # another class: another map
    other = next(c for c in CLASS_CODES if c != body["predicted_class"])
    explained = post_image(server_64, sample_jpeg, path="/explain", params={"target": other})
    assert explained.json()["explained_class"] == other
    other_png = np.asarray(decode_png(explained.json()), np.int16)
    assert (
        np.abs(other_png - expected_overlay(packaged_model_dir_64, sample_jpeg, other)).max() <= 1
    )
    assert np.abs(other_png - np.asarray(png, np.int16)).mean() > 1
    bad = post_image(server_64, sample_jpeg, path="/explain", params={"target": "cancer"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"


def test_model_card(server: Server, packaged_model_dir: Path):
    card = json.loads((packaged_model_dir / "model.json").read_text())
    with server.client() as client:
        body = client.get("/model").json()
    assert body["version"] == "test-1"
    assert body["metrics"] == card["metrics"]
    assert body["lineage"] == card["lineage"]
    assert body["card_sha256"] == card["card_sha256"]
    assert [c["code"] for c in body["classes"]] == list(CLASS_CODES)
    assert body["classes"][4] == CLASS_INFO["mel"].to_dict()
    assert body["preprocessing"]["input_size"] == 32


def test_metrics_count_requests_batches_and_queue(server: Server, sample_jpeg: bytes):
    post_image(server, sample_jpeg)
    post_image(server, b"")
    with server.client() as client:
        text = client.get("/metrics").text
    assert 'skindx_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'skindx_rejections_total{code="empty_file"}' in text
    assert "skindx_inference_batch_size_count" in text
    assert "skindx_inference_queue_depth 0.0" in text
    assert 'skindx_model_info{version="test-1"} 1.0' in text
    assert "skindx_http_request_duration_seconds_bucket" in text


def test_admin_reload_is_disabled_without_a_token(server: Server):
    with server.client() as client:
        response = client.post("/admin/reload", headers={"Authorization": "Bearer guess"})
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_ready_is_503_until_a_model_is_loaded(tmp_path: Path, sample_jpeg: bytes):
    with run_server(tmp_path, wait_ready=False, model_dir=tmp_path / "no-model") as srv:
        with srv.client() as client:
            assert client.get("/health").status_code == 200
            ready = client.get("/ready")
            assert ready.status_code == 503 and ready.json()["code"] == "not_ready"
            assert "model.json" in ready.json()["detail"]
            assert ready.headers["retry-after"] == "1"
            for path in ("/predict", "/explain"):
                response = client.post(path, files={"file": ("a.jpg", sample_jpeg, "image/jpeg")})
                assert response.status_code == 503 and response.json()["code"] == "not_ready"
            assert client.get("/model").status_code == 503
