"""Real uvicorn servers on 127.0.0.1 for the serving tests, on the packaged test model."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT

ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30), **kwargs)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"server at {self.url} not ready after {timeout}s:\n{self.log()}")


@contextlib.contextmanager
def run_server(
    tmp_path: Path, wait_ready: bool = True, as_module: bool = False, **settings: object
) -> Iterator[Server]:
    """`uvicorn serving.app:app` (or `python -m serving` with `as_module`, which reads host,
    port and workers from the environment) in a subprocess with SKINDX_<NAME> settings."""
    env = dict(os.environ)
    env.update({f"SKINDX_{k.upper()}": str(v) for k, v in settings.items()})
    port = free_port()
    env.update(SKINDX_HOST="127.0.0.1", SKINDX_PORT=str(port))
    uvicorn_cli = ["-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1", "--port", str(port)]
    log_path = tmp_path / f"uvicorn-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, *(["-m", "serving"] if as_module else uvicorn_cli)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"uvicorn exited with {process.returncode}:\n{server.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"uvicorn did not start:\n{server.log()}")
            time.sleep(0.1)
        if wait_ready:
            server.wait_ready()
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
    """A real full-resolution (600x450) HAM10000 image."""
    return fullres_images[0].read_bytes()
