"""Start a real server process on a free loopback port, wait until it answers, stop it cleanly.

One implementation for every test that runs a server (uvicorn, `python -m serving`, the whole
stack, compose): a failure to start names the command and shows the end of its log, instead of
a bare timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deploy.stack import free_port  # noqa: F401  (one definition; the tests import it from here)

LOG_TAIL_CHARS = 6000


def answers(url: str, ok: Callable[[httpx.Response], bool] | None = None) -> bool:
    """Whether `url` answers now (with 200, or whatever `ok` accepts)."""
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return ok(response) if ok else response.status_code == 200


@dataclass
class ServerProcess:
    """A server started by `start_server`: its base URL, process and combined log."""

    url: str
    process: subprocess.Popen
    log_path: Path
    command: Sequence[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.log()[-chars:]

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30), **kwargs)

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `condition` until true; fail (with the log) on timeout or if the process exits."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{' '.join(self.command)} exited with {self.process.returncode} before "
                    f"{what}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{' '.join(self.command)}: not {what} after {timeout:g}s:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def wait_for(
        self,
        path: str,
        timeout: float = 60,
        ok: Callable[[httpx.Response], bool] | None = None,
    ) -> None:
        """Wait until GET url+path answers 200 (or `ok`)."""
        url = f"{self.url.rstrip('/')}/{path.lstrip('/')}"
        self.wait_until(lambda: answers(url, ok), timeout, f"answering {url}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal the process (not its children: a supervisor such as honcho stops its own),
        then kill it if it still runs after `timeout` seconds. Returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextlib.contextmanager
def start_server(
    command: Sequence[str],
    url: str,
    log_path: Path,
    *,
    ready_path: str | None = "/health",
    timeout: float = 60,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    stop_signal: int = signal.SIGTERM,
    stop_timeout: float = 15,
    start_new_session: bool = False,
) -> Iterator[ServerProcess]:
    """Run `command` (stdout and stderr to `log_path`), wait until `url` + `ready_path` answers
    200 (skip with ready_path=None and wait yourself), yield it, and stop it whatever happens.

    `env` replaces the environment (default: this process's), `extra_env` is added on top.
    """
    environment = dict(os.environ if env is None else env)
    environment.update(extra_env or {})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=start_new_session,
        )
    server = ServerProcess(url.rstrip("/"), process, log_path, list(command))
    try:
        if ready_path is not None:
            server.wait_for(ready_path, timeout)
        yield server
    finally:
        server.stop(stop_signal, stop_timeout)
