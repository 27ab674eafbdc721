"""The UI's modules live in app/ (run by `streamlit run`, not a package): make them importable,
and give the UI tests a real API on the packaged test model."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers.servers import free_port
from tests.serving.conftest import Server, ood_package_dir, run_server  # noqa: F401 (fixture)

APP_DIR = REPO_ROOT / "app"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))


@pytest.fixture(scope="session")
def api_server(packaged_model_dir: Path, tmp_path_factory) -> Iterator[Server]:
    """A real uvicorn API on 127.0.0.1 serving the packaged test model."""
    with run_server(tmp_path_factory.mktemp("ui-api"), model_dir=packaged_model_dir) as server:
        yield server


@pytest.fixture
def closed_port_url() -> str:
    """A URL where nothing listens (the port was free a moment ago)."""
    return f"http://127.0.0.1:{free_port()}"
