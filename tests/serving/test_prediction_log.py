"""The prediction log, in-process (the real app, writer thread and database): what each answered
image leaves in the database, stored uploads and their retention, and a database that is down
or locked under a load of 200 requests (all answered; every missing record counted)."""

from __future__ import annotations

import hashlib
import io
import socket
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, insert

from serving.predlog.migrate import upgrade
from serving.predlog.models import predictions
from skindx.inference.classes import CLASS_CODES
from skindx.inference.image_stats import STAT_KEYS, image_stats
from skindx.inference.model import load_packaged_model
from skindx.inference.preprocessing import resize_to_contract
from tests.serving.checks import flush, post_image, probabilities, rows
from tests.serving.conftest import InProcessApi, in_process_api

LOAD = 200


def counters(api: InProcessApi) -> dict[str, float]:
    text = api.test_client.get("/metrics").text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("skindx_prediction_log_")
    }


def expected_stats(model_dir: Path, jpeg: bytes) -> dict[str, float]:
    model = load_packaged_model(model_dir)
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    return image_stats(resize_to_contract(image, model.contract))


@pytest.fixture
def logged_api(packaged_model_dir: Path, tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'log.db'}"
    with in_process_api(model_dir=packaged_model_dir, prediction_db=db) as api:
        yield api, db


def test_each_answered_image_is_one_record_with_its_fields(
    logged_api, packaged_model_dir: Path, synthetic_jpegs: list[bytes]
):
    api, db = logged_api
    jpeg, other = synthetic_jpegs[0], synthetic_jpegs[1]
    client = api.test_client
    one = post_image(api, jpeg, headers={"X-Request-ID": "client-id-1"})
    assert one.status_code == 200
    assert one.headers["x-request-id"] == "client-id-1" == one.json()["request_id"]
    assert one.json()["logged"] is True and one.json()["image_stored"] is False
    # an id that is not a sane token is replaced by a fresh one
    bad = post_image(api, jpeg, headers={"X-Request-ID": "no spaces; or semicolons"})
    fresh = bad.headers["x-request-id"]
    assert fresh != "no spaces; or semicolons" and bad.json()["request_id"] == fresh
    batch = client.post(
        "/predict/batch",
        files=[
            ("files", ("a.jpg", jpeg, "image/jpeg")),
            ("files", ("notes.txt", b"not an image" * 10, "text/plain")),
            ("files", ("b.jpg", other, "image/jpeg")),
        ],
        headers={"X-Request-ID": "batch-7"},
    ).json()
    assert batch["request_id"] == "batch-7"
    assert [r["prediction"] and r["prediction"]["request_id"] for r in batch["results"]] == [
        "batch-7-0",
        None,
        "batch-7-2",
    ]
    explained = client.post("/explain", files={"file": ("x.jpg", jpeg, "image/jpeg")}).json()
    post_image(api, b"")  # refused: not answered, not logged
    flush(api)

    by_id = {r["request_id"]: r for r in rows(db)}
    assert set(by_id) == {"client-id-1", fresh, "batch-7-0", "batch-7-2", explained["request_id"]}
    card = api.test_client.get("/model").json()
    record = by_id["client-id-1"]
    body = one.json()
    assert record["endpoint"] == "predict" and record["batch_index"] is None
    assert record["http_request_id"] == "client-id-1"
    assert record["model_version"] == "test-1" and record["card_sha256"] == card["card_sha256"]
    assert record["card_sha256"]
    assert record["predicted_class"] == body["predicted_class"]
    assert list(record["probabilities"]) == list(CLASS_CODES)
    np.testing.assert_allclose(list(record["probabilities"].values()), probabilities(body))
    assert record["confidence"] == pytest.approx(body["confidence"])
    assert record["ood_score"] is None  # until the trust issue adds one
    assert record["tta"] is False  # SKINDX_TTA's default, no ?tta=
    width, height = Image.open(io.BytesIO(jpeg)).size
    assert (record["image_format"], record["image_width"], record["image_height"]) == (
        "JPEG",
        width,
        height,
    )
    assert record["image_bytes"] == len(jpeg)
    assert record["image_sha256"] == hashlib.sha256(jpeg).hexdigest()
    assert record["image_path"] is None  # SKINDX_STORE_UPLOADS is off by default
    stats = expected_stats(packaged_model_dir, jpeg)
    for key in STAT_KEYS:
        assert record[key] == pytest.approx(stats[key], abs=1e-9), key
    assert 0 < record["latency_ms"] == pytest.approx(body["processing_time_ms"])
    assert abs(record["created_at"].replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds() < 120

    assert by_id["batch-7-2"]["image_sha256"] == hashlib.sha256(other).hexdigest()
    assert (by_id["batch-7-2"]["endpoint"], by_id["batch-7-2"]["batch_index"]) == ("batch", 2)
    assert by_id["batch-7-2"]["http_request_id"] == "batch-7"
    assert by_id[explained["request_id"]]["endpoint"] == "explain"
    assert counters(api)["skindx_prediction_log_written_total"] == 5
    assert counters(api)["skindx_prediction_log_dropped_total"] == 0


def test_stored_uploads_and_their_retention(
    packaged_model_dir: Path, tmp_path: Path, synthetic_jpeg: bytes
):
    db = f"sqlite:///{tmp_path / 'log.db'}"
    uploads = tmp_path / "uploads"
    with in_process_api(
        model_dir=packaged_model_dir,
        prediction_db=db,
        store_uploads="true",
        uploads_dir=uploads,
        upload_retention_days=7,
    ) as api:
        body = post_image(api, synthetic_jpeg).json()
        assert body["image_stored"] is True
        flush(api)
        (record,) = rows(db)
        day = record["created_at"].date().isoformat()
        assert record["image_path"] == f"{day}/{record['image_sha256']}.jpg"
        assert (uploads / record["image_path"]).read_bytes() == synthetic_jpeg

        # an old day's images go, today's stay; the log forgets the deleted paths
        old = uploads / "2020-01-01"
        old.mkdir()
        (old / "cafe.jpg").write_bytes(synthetic_jpeg)
        engine = create_engine(db)
        with engine.begin() as connection:
            connection.execute(
                insert(predictions),
                [
                    dict(
                        record,
                        id=None,
                        request_id="old-one",
                        created_at=datetime(2020, 1, 1, 12, tzinfo=UTC),
                        image_path="2020-01-01/cafe.jpg",
                    )
                ],
            )
        engine.dispose()
        assert api.app.state.prediction_log.prune() == ["2020-01-01"]
        assert not old.exists() and (uploads / record["image_path"]).is_file()
        paths = {r["request_id"]: r["image_path"] for r in rows(db)}
        assert paths == {record["request_id"]: record["image_path"], "old-one": None}


def test_with_the_log_off_nothing_is_recorded(
    packaged_model_dir: Path, tmp_path: Path, synthetic_jpeg: bytes
):
    with in_process_api(
        model_dir=packaged_model_dir, prediction_log="false", run_dir=tmp_path
    ) as api:
        response = post_image(api, synthetic_jpeg)
        assert response.status_code == 200 and response.json()["logged"] is False
        assert response.json()["request_id"] == response.headers["x-request-id"]
        assert api.app.state.prediction_log is None
    assert not (tmp_path / "predictions.db").exists()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the socket is: nothing listens


def load(api: InProcessApi, jpegs: list[bytes], n: int = LOAD) -> list[int]:
    def one(i: int) -> int:
        return post_image(api, jpegs[i % len(jpegs)]).status_code

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.slow
def test_a_database_that_is_down_loses_records_but_no_request(
    packaged_model_dir: Path, synthetic_jpegs: list[bytes]
):
    """A PostgreSQL DSN on a port where nothing listens: every write is refused."""
    dsn = f"postgresql://skindx:secret@127.0.0.1:{closed_port()}/skindx"
    with in_process_api(
        model_dir=packaged_model_dir, prediction_db=dsn, prediction_log_queue=16
    ) as api:
        statuses = load(api, synthetic_jpegs)
        assert statuses == [200] * LOAD
        flush(api)
        seen = counters(api)
    assert seen["skindx_prediction_log_written_total"] == 0
    lost = seen["skindx_prediction_log_dropped_total"] + seen["skindx_prediction_log_failed_total"]
    assert lost == LOAD  # every answered image is either dropped (queue full) or failed
    assert seen["skindx_prediction_log_write_errors_total"] >= 1


@pytest.mark.slow
def test_a_locked_database_drops_what_the_queue_cannot_hold(
    packaged_model_dir: Path, tmp_path: Path, synthetic_jpegs: list[bytes]
):
    """SQLite held by another writer (BEGIN EXCLUSIVE) for the whole load: the writer waits out
    its busy timeout, the small queue fills, records are dropped, none blocks a request; once
    the lock is released what was still queued is written. Exactly the written ones are in
    the database, and written + dropped + failed = the 200 answered images."""
    path = tmp_path / "log.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with in_process_api(
            model_dir=packaged_model_dir, prediction_db=f"sqlite:///{path}", prediction_log_queue=8
        ) as api:
            statuses = load(api, synthetic_jpegs)
            assert statuses == [200] * LOAD
            during = counters(api)
            holder.execute("ROLLBACK")
            flush(api)
            seen = counters(api)
    finally:
        holder.close()
    assert during["skindx_prediction_log_dropped_total"] > 0
    written = seen["skindx_prediction_log_written_total"]
    dropped = seen["skindx_prediction_log_dropped_total"]
    failed = seen["skindx_prediction_log_failed_total"]
    assert written + dropped + failed == LOAD
    assert len(rows(f"sqlite:///{path}")) == written
