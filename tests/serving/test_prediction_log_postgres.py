"""The prediction log on a real PostgreSQL server (Debian's, started here on a loopback port, as
compose runs one): the Alembic schema, records of every endpoint, feedback and its 409, through
psycopg 3 from a plain postgresql:// SKINDX_PREDICTION_DB. Skipped, with the reason, where
PostgreSQL is not installed."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, select, text

from serving.predlog.migrate import head_revision
from serving.predlog.models import feedback, metadata, predictions
from tests.helpers.servers import free_port
from tests.serving.checks import post_image
from tests.serving.conftest import in_process_api

pytestmark = pytest.mark.slow
TOKEN = "pg-reviewer-token"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def pg_tool(name: str) -> str:
    found = shutil.which(name) or (str(PG_BIN / name) if (PG_BIN / name).exists() else None)
    if not found:
        pytest.skip(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")
    return found


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    initdb, postgres = pg_tool("initdb"), pg_tool("postgres")
    # directly under /tmp: pytest's own temporary folders are private to root
    root = Path(tempfile.mkdtemp(prefix="skindx-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    # PostgreSQL refuses to run as root: as root, run it as `nobody`
    user = "nobody" if os.geteuid() == 0 else None
    if user:
        entry = pwd.getpwnam(user)
        for path in (root, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
            path.chmod(0o755)
    made = subprocess.run(
        [initdb, "-D", str(data), "-U", "skindx", "--auth=trust", "-E", "UTF8"],
        capture_output=True,
        text=True,
        user=user,
    )
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    port = free_port()
    log = (root / "postgres.log").open("wb")
    process = subprocess.Popen(
        [postgres, "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(sockets)],
        stdout=log,
        stderr=subprocess.STDOUT,
        user=user,
    )
    url = f"postgresql://skindx@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 60
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        while True:
            try:
                with engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        (root / "postgres.log").read_text(errors="replace")[-3000:]
                    ) from None
                time.sleep(0.3)
        engine.dispose()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def test_records_and_feedback_on_postgresql(postgres_url, packaged_model_dir, synthetic_jpegs):
    with in_process_api(
        model_dir=packaged_model_dir, prediction_db=postgres_url, reviewer_token=TOKEN
    ) as api:
        client = api.test_client
        single = post_image(api, synthetic_jpegs[0]).json()
        files = [
            ("files", (f"{i}.jpg", j, "image/jpeg")) for i, j in enumerate(synthetic_jpegs[:3])
        ]
        batch = client.post("/predict/batch", files=files).json()
        explained = client.post(
            "/explain", files={"file": ("e.jpg", synthetic_jpegs[4], "image/jpeg")}
        ).json()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        body = {"request_id": single["request_id"], "label": "mel", "reviewer": "pg"}
        assert client.post("/feedback", json=body, headers=auth).status_code == 201
        assert client.post("/feedback", json=body, headers=auth).status_code == 409
        assert api.app.state.prediction_log.flush(30)

    engine = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        # the migrations build exactly the declared tables on PostgreSQL too
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
        logged = {r.request_id: r for r in connection.execute(select(predictions))}
        labels = {r.request_id: r.label for r in connection.execute(select(feedback))}
    engine.dispose()
    assert revision == head_revision() and differences == []
    expected = {single["request_id"], explained["request_id"]}
    expected |= {r["prediction"]["request_id"] for r in batch["results"]}
    assert set(logged) == expected and len(expected) == 5
    row = logged[single["request_id"]]
    assert row.created_at.tzinfo is not None  # timestamptz on PostgreSQL
    assert row.tta is False
    assert row.probabilities[single["predicted_class"]] == pytest.approx(single["confidence"])
    assert labels == {single["request_id"]: "mel"}
