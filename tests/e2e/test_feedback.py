"""The feedback round trip through nginx on the process stack (`make serve`): predict, label,
and both rows are in the prediction log's database (SQLite in the stack's run directory, the
API's default: SKINDX_RUN_DIR/predictions.db)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import create_engine, select

from serving.predlog.models import feedback, predictions
from tests.e2e.conftest import REVIEWER_TOKEN
from tests.serving.hostile_corpus import synthetic_jpeg

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_predict_then_label_then_the_rows_are_in_the_database(stack):
    image = synthetic_jpeg(5)
    with stack.client() as client:
        predicted = client.post("predict", files={"file": ("case.jpg", image, "image/jpeg")})
        assert predicted.status_code == 200, predicted.text
        body = predicted.json()
        request_id = body["request_id"]
        # nginx's $request_id reaches the API, which keys the record by it and sends it back
        assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id
        assert predicted.headers["x-request-id"] == request_id
        assert body["logged"] is True and body["image_stored"] is False

        label = {"request_id": request_id, "label": "bkl", "reviewer": "e2e"}
        assert client.post("feedback", json=label).status_code == 401
        wrong = client.post("feedback", json=label, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        auth = {"Authorization": f"Bearer {REVIEWER_TOKEN}"}
        recorded = client.post("feedback", json=label, headers=auth)
        assert recorded.status_code == 201, recorded.text
        assert recorded.json()["predicted_class"] == body["predicted_class"]
        again = client.post("feedback", json={**label, "label": "nv"}, headers=auth)
        assert again.status_code == 409
        unknown = client.post("feedback", json={**label, "request_id": "0" * 32}, headers=auth)
        assert unknown.status_code == 404

    database = stack.run_dir / "predictions.db"
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        row = connection.execute(
            select(predictions).where(predictions.c.request_id == request_id)
        ).one()
        labelled = connection.execute(
            select(feedback).where(feedback.c.request_id == request_id)
        ).one()
    engine.dispose()
    assert (row.endpoint, row.model_version, row.predicted_class) == (
        "predict",
        "test-1",
        body["predicted_class"],
    )
    assert row.image_bytes == len(image) and row.image_path is None
    assert (labelled.label, labelled.reviewer) == ("bkl", "e2e")
