"""The whole HTTP contract of the API, in-process (FastAPI's TestClient: the real app with its
lifespan, middleware, engine and a real ONNX package; no socket), on synthetic images: seconds,
and no shared data. tests/serving/test_app.py runs the parts that need a real uvicorn and the
real full-resolution samples.

Moved here from test_app.py (where they ran against uvicorn on the real samples): health/ready/
docs, calibration, the hostile corpus, EXIF, the 422/404/405 contract, batches, /explain, the
model card, /metrics, the disabled admin API and /ready before a model; and from
test_load_and_reload.py, the admin token, refusal of a bad model and reload from no model.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from serving.routers.docs import ASSETS, STATIC_URL
from skindx.inference.classes import CLASS_CODES, CLASS_INFO
from tests.serving.checks import (
    assert_prediction,
    check_batch,
    check_calibration,
    check_explain,
    post_image,
    probabilities,
)
from tests.serving.conftest import (
    ADMIN_TOKEN,
    InProcessApi,
    broken_copy,
    copy_package,
    in_process_api,
    tampered_copy,
)
from tests.serving.hostile_corpus import Upload, encode, exif_rotated_jpeg, hostile_corpus

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TEXT = b"just some notes, not a photo\n" * 20


@pytest.fixture(scope="module")
def corpus(synthetic_jpeg: bytes) -> dict[str, Upload]:
    return {u.name: u for u in hostile_corpus(synthetic_jpeg)}


def test_health_ready_and_docs(api: InProcessApi):
    with api.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").json() == {"status": "ready", "model_version": "test-1"}
        docs = client.get("/api-docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        paths = client.get("/openapi.json").json()["paths"]
        for path in ("/predict", "/predict/batch", "/explain", "/model", "/ready", "/health"):
            assert path in paths
        assert "/admin/reload" not in paths  # disabled without a token
        assert client.get("/", follow_redirects=False).headers["location"] == "/api-docs"


@pytest.mark.parametrize("page", ["/api-docs", "/api-docs/redoc", "/api-docs/oauth2-redirect"])
def test_docs_pages_load_nothing_from_another_host(api: InProcessApi, page: str):
    with api.client() as client:
        response = client.get(page)
        assert response.status_code == 200
        html = response.text
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
        urls += re.findall(r"""url\s*:\s*["']([^"']+)["']""", html)
        assert urls or page.endswith("redirect"), html[:500]
        for url in urls:
            assert not urlsplit(url).netloc, f"{page} loads {url} from another host"
            assert not url.startswith("//"), url
        for url in urls:  # and every local one answers
            assert client.get(url).status_code == 200, url
        assert "cdn." not in html and "fonts.googleapis" not in html


def test_docs_assets_are_served_by_the_api(api: InProcessApi):
    with api.client() as client:
        for name in ASSETS:
            response = client.get(f"{STATIC_URL}/{name}")
            assert response.status_code == 200, name
            assert len(response.content) > 1000
        assert (
            "javascript" in client.get(f"{STATIC_URL}/swagger-ui-bundle.js").headers["content-type"]
        )
        assert (
            client.get(f"{STATIC_URL}/swagger-ui.css")
            .headers["content-type"]
            .startswith("text/css")
        )
        assert client.get(f"{STATIC_URL}/missing.js").status_code == 404
        redoc = client.get("/api-docs/redoc").text
        assert f"{STATIC_URL}/redoc.standalone.js" in redoc and "/openapi.json" in redoc


def test_prediction_is_calibrated_with_the_cards_temperature(
    api: InProcessApi, synthetic_jpeg: bytes, packaged_model_dir: Path
):
    check_calibration(api, synthetic_jpeg, packaged_model_dir)


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
def test_hostile_corpus(api: InProcessApi, corpus: dict[str, Upload], name: str):
    upload = corpus[name]
    response = post_image(api, upload.data, upload.filename, upload.content_type)
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


def test_exif_orientation_is_applied(api: InProcessApi, synthetic_jpeg: bytes):
    import io

    upright = Image.open(io.BytesIO(synthetic_jpeg)).convert("RGB")
    tagged = probabilities(post_image(api, exif_rotated_jpeg(upright)).json())
    plain = probabilities(
        post_image(api, encode(upright, "JPEG", quality=100, subsampling=0)).json()
    )
    stored_as_is = upright.transpose(Image.Transpose.ROTATE_90)  # what ignoring EXIF would see
    ignored = probabilities(post_image(api, encode(stored_as_is, "JPEG", quality=100)).json())
    assert np.abs(tagged - plain).max() < 0.2 * np.abs(ignored - plain).max()


def test_missing_file_field_is_a_clear_422(api: InProcessApi):
    with api.client() as client:
        for response in (client.post("/predict"), client.post("/predict", data={"other": "x"})):
            assert response.status_code == 422
            body = response.json()
            assert body["code"] == "invalid_request" and "file" in body["detail"]


def test_unknown_route_and_wrong_method_are_json(api: InProcessApi):
    with api.client() as client:
        missing = client.get("/nope")
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
        wrong = client.get("/predict")
        assert (wrong.status_code, wrong.json()["code"]) == (405, "method_not_allowed")


def test_a_body_over_the_limit_is_refused_with_the_limit_in_mb(api: InProcessApi):
    """Past the file limit plus the multipart allowance the body is cut off while streaming;
    a file just over the limit (the body within the allowance) is refused as a file."""
    mb = 1024 * 1024
    response = post_image(api, b"\xff\xd8\xff" + b"\0" * (10 * mb + 100 * 1024))
    assert response.status_code == 413
    assert response.json() == {
        "detail": "request body too large: uploads are limited to 10 MB per file",
        "code": "request_too_large",
    }
    just_over = post_image(api, b"\xff\xd8\xff" + b"\0" * (10 * mb))
    assert just_over.status_code == 413
    assert just_over.json() == {
        "detail": "file 'lesion.jpg' is over the limit of 10 MB",
        "code": "file_too_large",
    }


def test_the_upload_limit_is_max_upload_mb(packaged_model_dir: Path, synthetic_jpeg: bytes):
    """SKINDX_MAX_UPLOAD_MB sets the limit the API checks and reports, and nothing else does."""
    import os

    with in_process_api(model_dir=packaged_model_dir, max_upload_mb=1) as small:
        accepted = post_image(small, synthetic_jpeg)  # ~90 KB
        refused = post_image(small, synthetic_jpeg + os.urandom(1024 * 1024))
    assert accepted.status_code == 200, accepted.text
    assert refused.status_code == 413
    assert "limited to 1 MB per file" in refused.json()["detail"]


def test_batch_classifies_each_file_and_reports_bad_ones(
    api: InProcessApi, synthetic_jpegs: list[bytes]
):
    images = [(f"synthetic-{i}.jpg", data) for i, data in enumerate(synthetic_jpegs[:3])]
    check_batch(api, images, TEXT, "test-1")


def test_batch_refuses_one_oversized_file_and_classifies_the_rest(
    api: InProcessApi, synthetic_jpeg: bytes
):
    big = b"\xff\xd8\xff" + b"\0" * (10 * 1024 * 1024 + 1)
    files = [
        ("files", ("big.jpg", big, "image/jpeg")),
        ("files", ("good.jpg", synthetic_jpeg, "image/jpeg")),
    ]
    with api.client() as client:
        response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    big_result, good = response.json()["results"]
    assert (big_result["status_code"], big_result["error"]["code"]) == (413, "file_too_large")
    assert "'big.jpg' is over the limit of 10 MB" in big_result["error"]["detail"]
    assert good["status_code"] == 200 and good["prediction"]["model_version"] == "test-1"


def test_batch_where_no_file_is_an_image_fails_as_a_whole(api: InProcessApi, corpus):
    files = [
        ("files", ("a.gif", corpus["gif"].data, "image/gif")),
        ("files", ("b.svg", corpus["svg"].data, "image/svg+xml")),
    ]
    with api.client() as client:
        same = client.post("/predict/batch", files=files)
        files.append(("files", ("c.jpg", b"", "image/jpeg")))
        mixed = client.post("/predict/batch", files=files)
    assert same.status_code == 415, same.text
    assert same.json()["code"] == "unsupported_media_type"
    assert "'a.gif'" in same.json()["detail"] and "SVG" in same.json()["detail"]
    assert mixed.status_code == 422 and mixed.json()["code"] == "no_valid_files"
    assert "'c.jpg': the uploaded file is empty" in mixed.json()["detail"]


def test_batch_with_too_many_files_is_413(api: InProcessApi, corpus):
    tiny = corpus["webp"].data
    files = [("files", (f"{i}.webp", tiny, "image/webp")) for i in range(17)]
    with api.client() as client:
        response = client.post("/predict/batch", files=files)
    assert response.status_code == 413
    assert response.json()["code"] == "too_many_files"
    assert "at most 16" in response.json()["detail"]


@pytest.fixture(scope="module")
def api_64(packaged_model_dir_64: Path):
    with in_process_api(model_dir=packaged_model_dir_64) as app:
        yield app


def test_explain_returns_a_cam_overlay_png(
    api_64: InProcessApi, synthetic_jpeg: bytes, packaged_model_dir_64: Path
):
    check_explain(api_64, synthetic_jpeg, packaged_model_dir_64, "test-2-64px")


def test_model_card(api: InProcessApi, packaged_model_dir: Path):
    card = json.loads((packaged_model_dir / "model.json").read_text())
    with api.client() as client:
        body = client.get("/model").json()
    assert body["version"] == "test-1"
    assert body["metrics"] == card["metrics"]
    assert body["lineage"] == card["lineage"]
    assert body["card_sha256"] == card["card_sha256"]
    assert [c["code"] for c in body["classes"]] == list(CLASS_CODES)
    assert body["classes"][4] == CLASS_INFO["mel"].to_dict()
    assert body["preprocessing"]["input_size"] == 32


def test_model_card_names_its_headline_metrics(api: InProcessApi):
    """The UI labels the card's metrics from here: it has no skindx to import the names from."""
    from skindx.inference.metrics import HEADLINE_METRICS, METRIC_LABELS

    with api.client() as client:
        body = client.get("/model").json()
    labels = body["metric_labels"]
    assert list(labels) == list(HEADLINE_METRICS)
    assert labels == {name: METRIC_LABELS[name] for name in HEADLINE_METRICS}


def test_metrics_count_requests_batches_and_queue(api: InProcessApi, synthetic_jpeg: bytes):
    post_image(api, synthetic_jpeg)
    post_image(api, b"")
    with api.client() as client:
        text = client.get("/metrics").text
    assert 'skindx_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'skindx_rejections_total{code="empty_file"}' in text
    assert "skindx_inference_batch_size_count" in text
    assert "skindx_inference_queue_depth 0.0" in text
    assert 'skindx_model_info{version="test-1"} 1.0' in text
    assert "skindx_http_request_duration_seconds_bucket" in text


def test_admin_reload_is_disabled_without_a_token(api: InProcessApi):
    with api.client() as client:
        response = client.post("/admin/reload", headers={"Authorization": "Bearer guess"})
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert "SKINDX_ADMIN_TOKEN is unset" in response.json()["detail"]


def test_ready_is_503_until_a_model_is_loaded(tmp_path: Path, synthetic_jpeg: bytes):
    with in_process_api(wait_ready=False, model_dir=tmp_path / "no-model") as app:
        with app.client() as client:
            assert client.get("/health").status_code == 200
            ready = client.get("/ready")
            assert ready.status_code == 503 and ready.json()["code"] == "not_ready"
            assert "model.json" in ready.json()["detail"]
            assert ready.headers["retry-after"] == "1"
            for path in ("/predict", "/explain"):
                files = {"file": ("a.jpg", synthetic_jpeg, "image/jpeg")}
                response = client.post(path, files=files)
                assert response.status_code == 503 and response.json()["code"] == "not_ready"
            assert client.get("/model").status_code == 503


# --- the admin API (the slow, real-uvicorn versions under load: test_load_and_reload.py) ----


@pytest.fixture
def reloadable(packaged_model_dir: Path, tmp_path: Path):
    """An app with the admin API on, whose model directory we can replace."""
    model_dir = copy_package(packaged_model_dir, tmp_path / "model")
    with in_process_api(model_dir=model_dir, admin_token=ADMIN_TOKEN) as app:
        yield app, model_dir


def replace_package(model_dir: Path, new: Path) -> None:
    import shutil

    shutil.rmtree(model_dir)
    shutil.copytree(new, model_dir)


def test_reload_needs_the_admin_token(reloadable):
    app, _ = reloadable
    with app.client() as client:
        assert "/admin/reload" in client.get("/openapi.json").json()["paths"]
        missing = client.post("/admin/reload")
        assert missing.status_code == 401 and missing.json()["code"] == "unauthorized"
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/admin/reload", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403 and wrong.json()["code"] == "forbidden"
        assert client.get("/ready").json()["model_version"] == "test-1"


def test_reload_swaps_in_the_new_model(reloadable, packaged_model_dir_64: Path):
    app, model_dir = reloadable
    replace_package(model_dir, packaged_model_dir_64)
    with app.client() as client:
        reload = client.post("/admin/reload", headers=AUTH)
        assert reload.status_code == 200, reload.text
        assert reload.json() == {
            "status": "reloaded",
            "previous_version": "test-1",
            "model_version": "test-2-64px",
        }
        assert client.get("/model").json()["preprocessing"]["input_size"] == 64


@pytest.mark.parametrize(
    ("make_bad", "reason"),
    [(tampered_copy, "sha256"), (broken_copy, "onnx")],
    ids=["tampered", "broken"],
)
def test_reload_refuses_a_bad_model_and_keeps_serving(
    reloadable, tmp_path: Path, synthetic_jpeg: bytes, caplog, make_bad, reason: str
):
    app, model_dir = reloadable
    replace_package(model_dir, make_bad(model_dir, tmp_path / "bad"))
    with caplog.at_level(logging.ERROR, logger="serving.engine"), app.client() as client:
        response = client.post("/admin/reload", headers=AUTH)
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["code"] == "model_rejected"
        assert "test-1 keeps serving" in body["detail"] and reason in body["detail"]
        assert client.get("/ready").json() == {"status": "ready", "model_version": "test-1"}
        predicted = post_image(app, synthetic_jpeg)
        assert predicted.status_code == 200 and predicted.json()["model_version"] == "test-1"
        assert 'skindx_model_reloads_total{result="refused"} 1.0' in client.get("/metrics").text
    assert "refused the model" in caplog.text and "still serving test-1" in caplog.text


def test_not_ready_until_a_model_is_loaded_then_ready_after_reload(
    packaged_model_dir: Path, tmp_path: Path
):
    model_dir = tmp_path / "model"
    with in_process_api(wait_ready=False, model_dir=model_dir, admin_token=ADMIN_TOKEN) as app:
        with app.client() as client:
            assert client.get("/ready").status_code == 503
            copy_package(packaged_model_dir, model_dir)
            assert client.get("/ready").status_code == 503  # nothing reloads on its own
            reload = client.post("/admin/reload", headers=AUTH)
            assert reload.status_code == 200, reload.text
            assert reload.json()["previous_version"] is None
            assert client.get("/ready").json() == {"status": "ready", "model_version": "test-1"}
