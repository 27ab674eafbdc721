"""The whole stack, started exactly as `make serve` starts it (python -m deploy.stack: honcho
running nginx, the API, Streamlit and the MLflow UI), on free ports, stopped with Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import REPO_ROOT
from tests.helpers.servers import free_port, start_server

UI_SESSIONS = 4  # open UI WebSockets per client address (nginx limit_conn)
STARTUP_TIMEOUT_S = 300  # MLflow's first start migrates a fresh SQLite store: slow on 2 cores
SHUTDOWN_TIMEOUT_S = 30
SCREENSHOT_DIR = REPO_ROOT / "reports" / "e2e"
REVIEWER_TOKEN = "e2e-reviewer-token"  # enables POST /feedback (tests/e2e/test_feedback.py)


@dataclass
class Stack:
    url: str  # the one entry point, with a trailing slash
    run_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 60), **kwargs)

    def upstream(self, name: str) -> str:
        """The loopback address nginx forwards to for `api`, `ui` or `mlflow`."""
        conf = (self.run_dir / "nginx" / "conf.d" / "skindx.conf").read_text()
        # an upstream block (ui), or a map to an address variable (api, mlflow: re-resolvable)
        match = re.search(
            rf"(?:upstream skindx_{name} |map \S+ \$skindx_{name} )\{{.*?"
            rf"(?:server|default) (127\.0\.0\.1:\d+)",
            conf,
            re.S,
        )
        assert match, f"no address of {name} in the rendered nginx config"
        return f"http://{match.group(1)}"


def _descendants(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).children(recursive=True)
    return []


def _stop(process: subprocess.Popen, ports: list[int]) -> list[str]:
    """Ctrl-C the stack as a user would; returns what was still running (then killed)."""
    processes = _descendants(process.pid)  # honcho's children, found before they are orphaned
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    _, alive = psutil.wait_procs(processes, timeout=5)
    leftovers = []
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            leftovers.append(" ".join(proc.cmdline()) or str(proc.pid))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # honcho starts each in its own group
            proc.kill()
    psutil.wait_procs(alive, timeout=10)
    listening = [p for p in ports if _listening(p)]
    return leftovers + [f"port {p} still listening" for p in listening]


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        return True
    return False


@pytest.fixture(scope="session")
def stack(packaged_model_dir: Path, tmp_path_factory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("stack")
    port = free_port()
    env = dict(os.environ)
    env.update(
        SKINDX_HTTP_PORT=str(port),
        SKINDX_RUN_DIR=str(run_dir),
        SKINDX_MODEL_DIR=str(packaged_model_dir),
        SKINDX_MLFLOW_BACKEND_URI=f"sqlite:///{run_dir / 'mlflow.db'}",
        SKINDX_MLFLOW_ARTIFACTS=str(run_dir / "mlartifacts"),
        SKINDX_DOCS_SITE=str(run_dir / "site"),
        SKINDX_READY_TIMEOUT=str(STARTUP_TIMEOUT_S),
        SKINDX_UI_SESSIONS=str(UI_SESSIONS),
        SKINDX_REVIEWER_TOKEN=REVIEWER_TOKEN,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    url = f"http://127.0.0.1:{port}/"
    with start_server(
        [sys.executable, "-m", "deploy.stack"],
        url,
        run_dir / "stack.log",
        ready_path=None,  # wait for the announcer: it checks every service
        cwd=REPO_ROOT,
        env=env,
        stop_signal=signal.SIGINT,
        stop_timeout=SHUTDOWN_TIMEOUT_S,
        start_new_session=True,  # like a terminal's job: our SIGINT reaches honcho alone
    ) as server:
        stack = Stack(url, run_dir, server.log_path)
        ports = [port]
        try:
            server.wait_until(
                lambda: f"SkinDX is ready at {url}" in stack.log(),
                STARTUP_TIMEOUT_S + 30,
                "ready",
            )
            ports += [int(stack.upstream(n).rsplit(":", 1)[1]) for n in ("api", "ui", "mlflow")]
            yield stack
        finally:
            leftovers = _stop(server.process, ports)
            if leftovers:
                pytest.fail("Ctrl-C did not stop the whole stack: " + "; ".join(leftovers))
