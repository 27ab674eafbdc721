"""The UI's side of the API contract, without a browser or a server: the upload limit it
announces, and the headline metrics it labels from the API's own /model answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_client import DEFAULT_API_URL, ApiClient, upload_limit_mb
from presentation import headline_metrics
from streamlit.testing.v1 import AppTest

from tests.app.conftest import APP_DIR
from tests.serving.conftest import in_process_api


def test_the_upload_limit_is_the_apis_variable():
    assert upload_limit_mb({"SKINDX_MAX_UPLOAD_MB": "25"}, fallback=10) == 25
    assert upload_limit_mb({"SKINDX_MAX_UPLOAD_MB": " "}, fallback=7) == 7  # Streamlit's own
    for bad in ("ten", "0", "-3", "2.5"):
        with pytest.raises(ValueError, match="whole number of MB"):
            upload_limit_mb({"SKINDX_MAX_UPLOAD_MB": bad}, fallback=10)
    with pytest.raises(ValueError, match="set SKINDX_MAX_UPLOAD_MB"):
        upload_limit_mb({})


def test_the_client_finds_the_api_from_api_url():
    assert ApiClient.from_env({"API_URL": "http://api:8000/"}).base_url == "http://api:8000"
    assert ApiClient.from_env({}).base_url == DEFAULT_API_URL


@pytest.mark.parametrize("limit", ["3", "25"])
def test_the_uploader_announces_and_enforces_that_limit(monkeypatch, closed_port_url, limit):
    monkeypatch.setenv("API_URL", closed_port_url)
    monkeypatch.setenv("SKINDX_MAX_UPLOAD_MB", limit)
    at = AppTest.from_file(str(APP_DIR / "streamlit_app.py"), default_timeout=60).run()
    assert not at.exception
    uploader = at.file_uploader[0]
    assert f"up to {limit} MB" in uploader.label
    assert uploader.proto.max_upload_size_mb == int(limit)


def test_headline_metrics_are_labelled_from_the_apis_model_card(packaged_model_dir: Path):
    """The card the API serves carries the labels; the UI shows the card's metrics with them."""
    with in_process_api(model_dir=packaged_model_dir) as api, api.client() as client:
        card = client.get("/model").json()
    assert headline_metrics(card) == [("Balanced accuracy", "0.500"), ("Accuracy", "0.600")]
