"""The compose stack on a real Docker engine: images built once per session (layer cache), the
stack up on a free loopback port, everything removed afterwards (containers, volumes, networks).

The engine must answer `docker info`; without one these tests are skipped with that reason
(`.ci/run` starts one first, so CI always runs them). The stack runs from a copy of the
checkout (tracked and untracked-not-ignored files, as a fresh clone plus work in progress has)
with the quick pipeline's promoted model in serving/model, under its own project name and image
prefix, so nothing of a developer's own `make up` stack or images is touched. Its secrets are its
own too: docker/stack_secrets.py writes a fresh .secrets/ into the copy (as `make up` does), and
`ComposeStack.mlflow_auth` is the login the trainer gets from there.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from deploy.compose_wait import wait_healthy
from deploy.image import image_values
from tests.conftest import REPO_ROOT, project_files
from tests.helpers.servers import free_port

SERVICES = ("postgres", "mlflow", "monitor", "api", "ui", "nginx", "prometheus")
BUILD_TIMEOUT_S = 2400  # a cold trainer build installs CUDA torch (~4 GB of wheels)
UP_TIMEOUT_S = 420
REPORT_DIR = REPO_ROOT / "reports" / "containers"


def engine_problem() -> str | None:
    """Why no container test can run here, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "no docker client on PATH (install Docker; on CI .ci/run starts the engine)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker info failed: {exc}"
    if info.returncode != 0:
        return f"no Docker engine answers `docker info`: {info.stderr.strip()[:300]}"
    if compose_command() is None:
        return "neither `docker compose` (v2) nor docker-compose (v1) is installed"
    return None


def compose_command() -> list[str] | None:
    """`docker compose` where the v2 plugin exists, else docker-compose v1 (as the Makefile)."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        v2 = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if v2.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def copy_checkout(dest: Path) -> Path:
    """A copy of what a fresh clone plus work in progress has (tests.conftest.project_files)."""
    for rel in project_files():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, dest / rel)
    return dest


def write_secrets(directory: Path) -> Path:
    """The checkout copy's own .secrets/ (its passwords), as `make secrets` writes them: every
    compose command needs the files (env_file:)."""
    subprocess.run(
        [
            sys.executable,
            str(directory / "docker" / "stack_secrets.py"),
            "--dir",
            str(directory / ".secrets"),
        ],
        check=True,
        capture_output=True,
    )
    return directory / ".secrets"


@dataclass
class ComposeStack:
    """A running compose project: its command, environment and entry URL."""

    project: str
    directory: Path
    env: dict[str, str]
    url: str
    compose: list[str]
    model_card: dict
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def secrets_dir(self) -> Path:
        return self.directory / ".secrets"

    def secret_env(self, service: str) -> dict[str, str]:
        """The variables of .secrets/<service>.env (what compose gives that service)."""
        values = {}
        for line in (self.secrets_dir / f"{service}.env").read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key] = value
        return values

    @property
    def mlflow_auth(self) -> tuple[str, str]:
        """(user, password) of MLflow's basic-auth login: the trainer's, from .secrets/."""
        env = self.secret_env("trainer")
        return env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]

    def command(self, *args: str) -> list[str]:
        return [
            *self.compose,
            "-p",
            self.project,
            "-f",
            str(self.directory / "docker-compose.yml"),
            "--project-directory",
            str(self.directory),
            *args,
        ]

    def run(self, *args: str, timeout: float = 600, check: bool = True):
        result = subprocess.run(
            self.command(*args),
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def containers(self, service: str) -> list[str]:
        """Names of the service's running containers."""
        out = subprocess.run(
            [
                "docker",
                "ps",
                "--filter",
                f"label=com.docker.compose.project={self.project}",
                "--filter",
                f"label=com.docker.compose.service={service}",
                "--format",
                "{{.Names}}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return sorted(out)

    def inspect(self, name: str) -> dict:
        out = subprocess.run(
            ["docker", "inspect", name], capture_output=True, text=True, check=True
        ).stdout
        return json.loads(out)[0]

    def exec(self, container: str, *argv: str, timeout: float = 60) -> str:
        result = subprocess.run(
            ["docker", "exec", container, *argv], capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"{container}: {argv}: {result.stderr[-2000:]}"
        return result.stdout

    def wait_healthy(self, timeout: float = UP_TIMEOUT_S) -> None:
        wait_healthy(self.command(), timeout=timeout, env=self.env)

    @property
    def operator_auth(self) -> tuple[str, str]:
        """(user, password) of nginx's operators' login (/prometheus/, /monitoring/)."""
        return self.env.get("SKINDX_OPERATOR_USER", "operator"), self.env[
            "SKINDX_OPERATOR_PASSWORD"
        ]

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 60), **kwargs)


def timed(timings: dict[str, float], name: str, fn, *args, **kwargs):
    started = time.monotonic()
    result = fn(*args, **kwargs)
    timings[name] = round(time.monotonic() - started, 1)
    return result


def image_size(tag: str) -> int:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", tag],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


@pytest.fixture(scope="session")
def docker_engine() -> list[str]:
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    return compose_command()


@pytest.fixture(scope="session")
def compose_stack(docker_engine, quick_project, tmp_path_factory) -> Iterator[ComposeStack]:
    """The stack built and up from a copy of the checkout, with the quick pipeline's promoted
    model baked into the API image; torn down (volumes and networks too) whatever happens."""
    directory = copy_checkout(tmp_path_factory.mktemp("compose") / "skindx")
    model = directory / "serving" / "model"
    shutil.copytree(quick_project.path / "serving" / "model", model)
    project = f"skindxtest{os.getpid()}"
    port = free_port()
    env = {
        **os.environ,
        **image_values(model, root=REPO_ROOT),
        "COMPOSE_PROJECT_NAME": project,
        "SKINDX_IMAGE_PREFIX": "skindx-test",
        "SKINDX_HTTP_PORT": str(port),
        "SKINDX_BIND": "127.0.0.1",
        # many predictions in a row from one client address: past the default rate limit
        "SKINDX_PREDICT_RATE": "1000r/s",
        # the operators' login of /prometheus/ and /monitoring/ (tests/containers/test_prometheus.py)
        "SKINDX_OPERATOR_PASSWORD": secrets.token_urlsafe(16),
        # Prometheus scrapes and evaluates every 2 s and fires an alert at once (`for:` 0s), so
        # that a test sees an alert fire within seconds, not minutes
        "SKINDX_PROMETHEUS_INTERVAL": "2s",
        "SKINDX_PROMETHEUS_ALERT_FOR": "0s",
    }
    stack = ComposeStack(
        project=project,
        directory=directory,
        env=env,
        url=f"http://127.0.0.1:{port}/",
        compose=docker_engine,
        model_card=json.loads((model / "model.json").read_text()),
    )
    prefix = env["SKINDX_IMAGE_PREFIX"]
    sizes = {}
    write_secrets(directory)
    try:
        for service in (*SERVICES, "trainer"):
            timed(
                stack.timings,
                f"build_{service}_s",
                stack.run,
                "--profile",
                "train",
                "build",
                service,
                timeout=BUILD_TIMEOUT_S,
            )
            tag = (
                f"{prefix}/api:{env['SKINDX_API_TAG']}"
                if service == "api"
                else f"{prefix}/{service}:latest"
            )
            sizes[service] = image_size(tag)
        timed(stack.timings, "up_s", stack.run, "up", "-d", timeout=UP_TIMEOUT_S)
        timed(stack.timings, "healthy_s", stack.wait_healthy)
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        (REPORT_DIR / "stack.json").write_text(
            json.dumps({"image_bytes": sizes, "seconds": stack.timings}, indent=2) + "\n"
        )
        yield stack
    finally:
        logs = stack.run("--profile", "train", "logs", "--no-color", "--tail", "200", check=False)
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        (REPORT_DIR / "compose.log").write_text(logs.stdout + logs.stderr)
        stack.run(
            "--profile", "train", "down", "--volumes", "--remove-orphans", "-t", "5", check=False
        )
