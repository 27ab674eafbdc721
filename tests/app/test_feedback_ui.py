"""The reviewer's feedback in the UI, on a real API (uvicorn, prediction log in SQLite, reviewer
token set, uploads stored): after an analysis the UI says whether the image was stored, and a
reviewer's confirmed diagnosis reaches the database; a wrong token is refused in words."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from streamlit.testing.v1 import AppTest

from serving.predlog.models import feedback
from tests.app.conftest import APP_DIR
from tests.serving.conftest import Server, run_server
from tests.serving.hostile_corpus import synthetic_jpeg

pytestmark = pytest.mark.slow
SCRIPT = str(APP_DIR / "streamlit_app.py")
TOKEN = "ui-reviewer-token"


@pytest.fixture(scope="module")
def reviewed_api(packaged_model_dir: Path, tmp_path_factory) -> Iterator[tuple[Server, str]]:
    tmp = tmp_path_factory.mktemp("ui-feedback")
    db = f"sqlite:///{tmp / 'log.db'}"
    with run_server(
        tmp,
        model_dir=packaged_model_dir,
        prediction_db=db,
        reviewer_token=TOKEN,
        store_uploads="true",
        uploads_dir=tmp / "uploads",
    ) as server:
        yield server, db


def analyzed(monkeypatch, url: str) -> AppTest:
    monkeypatch.setenv("API_URL", url)
    at = AppTest.from_file(SCRIPT, default_timeout=60).run()
    at.file_uploader[0].set_value(("lesion.jpg", synthetic_jpeg(3), "image/jpeg")).run()
    at.button[0].click().run()
    assert not at.exception and not at.error
    return at


def submit(at: AppTest, label: str, token: str) -> AppTest:
    at.selectbox[0].set_value(label)
    at.text_input[0].set_value("dr. ui")
    at.text_input[1].set_value(token)
    next(b for b in at.button if b.label == "Record diagnosis").click()
    return at.run()


def labels(db: str) -> dict[str, str]:
    engine = create_engine(db)
    with engine.connect() as connection:
        found = {r.request_id: r.label for r in connection.execute(select(feedback))}
    engine.dispose()
    return found


def test_a_reviewer_records_the_confirmed_diagnosis(monkeypatch, reviewed_api):
    server, db = reviewed_api
    at = analyzed(monkeypatch, server.url)
    captions = "\n".join(c.value for c in at.caption)
    assert "The server stored a copy of this image" in captions
    at = submit(at, "mel", TOKEN)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Recorded: Melanoma" in at.success[0].value
    assert "can join the next training" in at.success[0].value
    assert list(labels(db).values()).count("mel") == 1


def test_a_wrong_token_is_refused_in_words(monkeypatch, reviewed_api):
    server, db = reviewed_api
    before = labels(db)
    at = submit(analyzed(monkeypatch, server.url), "nv", "not-the-token")
    assert "wrong feedback token" in at.error[0].value
    assert labels(db) == before
