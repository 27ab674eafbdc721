"""POST /feedback in-process: the reviewer token (404 disabled, 401, 403), 201 with the row in
the database, 404 for an unknown request id, 409 for a second label, 422 for a label that is not
a class, 503 with the log off or its database down."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from serving.predlog.models import feedback
from skindx.inference.classes import CLASS_CODES
from tests.serving.checks import post_image
from tests.serving.conftest import InProcessApi, in_process_api

TOKEN = "test-reviewer-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def reviewed(packaged_model_dir: Path, tmp_path_factory):
    db = f"sqlite:///{tmp_path_factory.mktemp('feedback') / 'log.db'}"
    with in_process_api(
        model_dir=packaged_model_dir, prediction_db=db, reviewer_token=TOKEN
    ) as api:
        yield api, db


def label(api: InProcessApi, request_id: str, code: str, headers=AUTH, **extra):
    body = {"request_id": request_id, "label": code, **extra}
    return api.test_client.post("/feedback", json=body, headers=headers)


def feedback_rows(db: str) -> dict[str, dict]:
    engine = create_engine(db)
    with engine.connect() as connection:
        found = {r.request_id: dict(r._mapping) for r in connection.execute(select(feedback))}
    engine.dispose()
    return found


def test_a_label_is_recorded_once(reviewed, synthetic_jpeg: bytes):
    api, db = reviewed
    prediction = post_image(api, synthetic_jpeg).json()
    request_id = prediction["request_id"]
    other = next(c for c in CLASS_CODES if c != prediction["predicted_class"])
    # at once: the prediction may still wait in the writer's queue
    response = label(api, request_id, other, reviewer="dr. a", note="biopsy confirmed")
    assert response.status_code == 201, response.text
    assert response.json() == {
        "status": "recorded",
        "request_id": request_id,
        "label": other,
        "predicted_class": prediction["predicted_class"],
        "agrees": False,
        "model_version": "test-1",
        "image_stored": False,
    }
    row = feedback_rows(db)[request_id]
    assert (row["label"], row["reviewer"], row["note"]) == (other, "dr. a", "biopsy confirmed")

    again = label(api, request_id, prediction["predicted_class"])
    assert again.status_code == 409 and again.json()["code"] == "already_labelled"
    assert repr(other) in again.json()["detail"]
    assert feedback_rows(db)[request_id]["label"] == other  # the first label stands
    metrics = api.test_client.get("/metrics").text
    assert 'skindx_feedback_total{agrees="false"} 1.0' in metrics


def test_a_batch_file_is_labelled_by_its_own_id(reviewed, synthetic_jpegs: list[bytes]):
    api, db = reviewed
    files = [("files", (f"{i}.jpg", j, "image/jpeg")) for i, j in enumerate(synthetic_jpegs[:2])]
    batch = api.test_client.post("/predict/batch", files=files).json()
    second = batch["results"][1]["prediction"]
    response = label(api, second["request_id"], second["predicted_class"])
    assert response.status_code == 201 and response.json()["agrees"] is True
    assert second["request_id"] in feedback_rows(db)


def test_unknown_request_id_is_404(reviewed):
    api, _ = reviewed
    response = label(api, "never-seen", "mel")
    assert response.status_code == 404 and response.json()["code"] == "unknown_request_id"
    assert "never-seen" in response.json()["detail"]


@pytest.mark.parametrize("bad", ["melanoma", "MEL", "", "xyz"])
def test_a_label_that_is_not_a_class_is_422(reviewed, synthetic_jpeg: bytes, bad: str):
    api, db = reviewed
    request_id = post_image(api, synthetic_jpeg).json()["request_id"]
    response = label(api, request_id, bad)
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"
    assert "label" in response.json()["detail"]
    assert request_id not in feedback_rows(db)


def test_the_reviewer_token_is_required(reviewed):
    api, _ = reviewed
    missing = label(api, "x", "mel", headers={})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = label(api, "x", "mel", headers={"Authorization": "Bearer guess"})
    assert wrong.status_code == 403 and wrong.json()["code"] == "forbidden"
    assert "/feedback" in api.test_client.get("/openapi.json").json()["paths"]


def test_feedback_is_disabled_without_a_token(api: InProcessApi):
    response = label(api, "x", "mel")
    assert response.status_code == 404
    assert "SKINDX_REVIEWER_TOKEN is unset" in response.json()["detail"]
    assert "/feedback" not in api.test_client.get("/openapi.json").json()["paths"]


def test_feedback_needs_the_log(packaged_model_dir: Path, tmp_path: Path):
    with in_process_api(
        model_dir=packaged_model_dir, prediction_log="false", reviewer_token=TOKEN
    ) as api:
        response = label(api, "x", "mel")
    assert response.status_code == 503 and response.json()["code"] == "prediction_log_off"
    assert "SKINDX_PREDICTION_LOG" in response.json()["detail"]


def test_a_database_that_is_down_is_503(packaged_model_dir: Path, synthetic_jpeg: bytes):
    from tests.serving.test_prediction_log import closed_port

    dsn = f"postgresql://skindx@127.0.0.1:{closed_port()}/skindx"
    with in_process_api(
        model_dir=packaged_model_dir, prediction_db=dsn, reviewer_token=TOKEN
    ) as api:
        request_id = post_image(api, synthetic_jpeg).json()["request_id"]
        response = label(api, request_id, "nv")
    assert response.status_code == 503
    assert response.json()["code"] == "prediction_log_unavailable"
    assert response.headers["retry-after"]
