"""The API for the serving tests, on the packaged test model: in-process (FastAPI's TestClient:
the real app, its lifespan, middleware and engine, no socket) for the fast tests, and real
uvicorn servers on 127.0.0.1 for the slow ones."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI

with warnings.catch_warnings():  # Starlette would rather have httpx2, which is not pinned here
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from tests.conftest import REPO_ROOT
from tests.helpers.servers import ServerProcess, free_port, start_server
from tests.serving.hostile_corpus import synthetic_jpeg as make_synthetic_jpeg

ADMIN_TOKEN = "test-admin-token"


Server = ServerProcess  # a uvicorn API started by `run_server`


@dataclass
class InProcessApi:
    """The app behind a TestClient; `client()` has the interface of Server.client()."""

    test_client: TestClient
    app: FastAPI

    def client(self) -> contextlib.AbstractContextManager[TestClient]:
        return contextlib.nullcontext(self.test_client)  # one client for the app's lifetime

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.test_client.get("/ready").status_code != 200:
            if time.monotonic() > deadline:
                engine = self.app.state.engine
                raise AssertionError(f"no model after {timeout}s: {engine.load_error}")
            time.sleep(0.02)


@contextlib.contextmanager
def in_process_api(wait_ready: bool = True, **settings: object) -> Iterator[InProcessApi]:
    """create_app on SKINDX_<NAME> settings (nothing else from the environment or `.env`),
    started and stopped by TestClient as uvicorn would (lifespan)."""
    from serving.app import create_app
    from serving.settings import Settings

    with tempfile.TemporaryDirectory(prefix="skindx-run-") as run_dir:
        # the prediction log's database (and stored uploads) away from the checkout's .run
        settings = {"run_dir": run_dir, **settings}
        environ = {f"SKINDX_{k.upper()}": str(v) for k, v in settings.items()}
        app = create_app(Settings.from_env(environ))
        with TestClient(app, raise_server_exceptions=False) as client:
            api = InProcessApi(client, app)
            if wait_ready:
                api.wait_ready()
            yield api


@contextlib.contextmanager
def run_server(
    tmp_path: Path, wait_ready: bool = True, as_module: bool = False, **settings: object
) -> Iterator[Server]:
    """`uvicorn serving.app:app` (or `python -m serving` with `as_module`, which reads host,
    port and workers from the environment) in a subprocess with SKINDX_<NAME> settings."""
    port = free_port()
    settings = {"run_dir": tmp_path / f"run-{port}", **settings}  # the prediction log's home
    env = {f"SKINDX_{k.upper()}": str(v) for k, v in settings.items()}
    env.update(SKINDX_HOST="127.0.0.1", SKINDX_PORT=str(port))
    uvicorn_cli = ["-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1", "--port", str(port)]
    command = [sys.executable, *(["-m", "serving"] if as_module else uvicorn_cli)]
    with start_server(
        command,
        f"http://127.0.0.1:{port}",
        tmp_path / f"uvicorn-{port}.log",
        cwd=REPO_ROOT,
        extra_env=env,
    ) as server:
        if wait_ready:
            server.wait_for("/ready")
        yield server


def copy_package(src: Path, dest: Path, version: str | None = None) -> Path:
    """A copy of a packaged model, optionally relabelled with another version (and sealed
    again, as the registry does when it numbers a version)."""
    from skindx.export.card import write_card

    shutil.copytree(src, dest)
    if version is not None:
        card = json.loads((dest / "model.json").read_text())
        card["version"] = version
        write_card(card, dest)
    return dest


def tampered_copy(src: Path, dest: Path) -> Path:
    copy_package(src, dest, version="tampered")
    onnx = bytearray((dest / "model.onnx").read_bytes())
    onnx[len(onnx) // 2] ^= 0x01
    (dest / "model.onnx").write_bytes(bytes(onnx))
    return dest


def broken_copy(src: Path, dest: Path) -> Path:
    """Hashes that match, but an ONNX file that is not a model."""
    import hashlib

    from skindx.export.card import write_card

    copy_package(src, dest, version="broken")
    garbage = b"this is not an onnx graph" * 100
    (dest / "model.onnx").write_bytes(garbage)
    card = json.loads((dest / "model.json").read_text())
    card["files"]["model.onnx"] = hashlib.sha256(garbage).hexdigest()
    write_card(card, dest)
    return dest


@pytest.fixture(scope="session")
def api(packaged_model_dir: Path) -> Iterator[InProcessApi]:
    """The app in-process on the packaged test model (admin API disabled)."""
    with in_process_api(model_dir=packaged_model_dir) as app:
        yield app


@pytest.fixture(scope="session")
def server(packaged_model_dir: Path, tmp_path_factory) -> Iterator[Server]:
    """A default server on the packaged test model (admin API disabled)."""
    with run_server(tmp_path_factory.mktemp("server"), model_dir=packaged_model_dir) as srv:
        yield srv


@pytest.fixture(scope="session")
def packaged_model_dir_64(tmp_path_factory) -> Path:
    """A second package: another untrained resnet18, at 64 px (layer4 is 2x2, so its Grad-CAM
    has structure, and a reload to it changes the input contract)."""
    from skindx.export.package import build_package
    from skindx.inference import PreprocessingContract
    from tests.conftest import make_untrained_model

    return build_package(
        make_untrained_model(seed=1),
        PreprocessingContract(input_size=64),
        tmp_path_factory.mktemp("package64") / "model",
        temperature=1.0,
        version="test-2-64px",
    )


@pytest.fixture(scope="session")
def sample_jpeg(fullres_images: list[Path]) -> bytes:
    """A real full-resolution (600x450) HAM10000 image (needs the shared data: slow tests)."""
    return fullres_images[0].read_bytes()


@pytest.fixture(scope="session")
def synthetic_jpegs() -> list[bytes]:
    """Eight made-up 600x450 lesion photos (hostile_corpus.synthetic_lesion), no data needed."""
    return [make_synthetic_jpeg(seed) for seed in range(8)]


@pytest.fixture(scope="session")
def synthetic_jpeg(synthetic_jpegs: list[bytes]) -> bytes:
    return synthetic_jpegs[0]


@pytest.fixture(scope="session")
def ood_package_dir(processed_dir: Path, tmp_path_factory) -> Path:
    """A package with an out-of-distribution scorer (untrained resnet18, 32 px, fitted on
    processed_dir's real train images; flat colours as its only probes, to build fast).
    Read-only; tests.helpers.ood.with_ood_threshold makes a copy with another threshold."""
    from skindx.export.ood import flat_colours
    from tests.conftest import make_untrained_model
    from tests.helpers.ood import build_ood_package

    return build_ood_package(
        processed_dir,
        tmp_path_factory.mktemp("ood-package") / "model",
        make_untrained_model(),
        probes={"flat_colours": flat_colours()},
    )
