"""Real uvicorn servers on 127.0.0.1 for the serving tests, on the packaged test model."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers.servers import ServerProcess, free_port, start_server

ADMIN_TOKEN = "test-admin-token"


Server = ServerProcess  # a uvicorn API started by `run_server`


@contextlib.contextmanager
def run_server(
    tmp_path: Path, wait_ready: bool = True, as_module: bool = False, **settings: object
) -> Iterator[Server]:
    """`uvicorn serving.app:app` (or `python -m serving` with `as_module`, which reads host,
    port and workers from the environment) in a subprocess with SKINDX_<NAME> settings."""
    port = free_port()
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
