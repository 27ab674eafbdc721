"""The API over real HTTP (uvicorn on 127.0.0.1) on a real packaged ONNX model, with the real
full-resolution HAM10000 samples: what the in-process tests (test_api.py, where the rest of this
file's tests moved, on synthetic images) cannot show, such as a body refused before it is sent."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.serving.checks import (
    assert_prediction,
    check_batch,
    check_calibration,
    check_explain,
    post_image,
)
from tests.serving.conftest import Server

pytestmark = pytest.mark.slow  # starts real servers, reads the shared data


def test_health_ready_and_docs(server: Server):
    with server.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").json() == {"status": "ready", "model_version": "test-1"}
        docs = client.get("/api-docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        assert client.get("/api-docs/static/swagger-ui-bundle.js").status_code == 200
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
    check_calibration(server, sample_jpeg, packaged_model_dir)


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


def test_batch_of_full_resolution_samples(server: Server, fullres_images: list[Path]):
    images = [(p.name, p.read_bytes()) for p in fullres_images[:3]]
    check_batch(server, images, b"just some notes, not a photo\n" * 20, "test-1")


@pytest.fixture(scope="module")
def server_64(packaged_model_dir_64: Path, tmp_path_factory) -> Server:
    from tests.serving.conftest import run_server

    with run_server(tmp_path_factory.mktemp("server64"), model_dir=packaged_model_dir_64) as srv:
        yield srv


def test_explain_returns_a_cam_overlay_png(
    server_64: Server, sample_jpeg: bytes, packaged_model_dir_64: Path
):
    check_explain(server_64, sample_jpeg, packaged_model_dir_64, "test-2-64px")
