"""docker-compose.yml and the Dockerfiles, checked without a Docker engine: Debian's
docker-compose (v1) validates the file, and every COPY source must exist in its build context.
The real builds, the running stack and its faults are tests/containers/ (marker `containers`)."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # runs docker-compose (config) a few times

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
LONG_RUNNING = ("postgres", "mlflow", "api", "ui", "nginx")


@pytest.fixture(scope="module", autouse=True)
def stack_secrets():
    """Every compose command reads .secrets/*.env (env_file:): write them as `make secrets` does
    (git-ignored, kept when present), so a fresh clone's `config` resolves."""
    subprocess.run(["python3", str(REPO_ROOT / "docker" / "stack_secrets.py")], check=True)


def docker_compose(*args: str, compose_file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: run `make system-deps`")
    files = [] if "-f" in args else ["-f", str(compose_file)]
    return subprocess.run(
        [binary, *files, "--project-directory", str(REPO_ROOT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},  # no SKINDX_* from the caller
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    """The resolved configuration (defaults interpolated), trainer profile included."""
    result = docker_compose("--profile", "train", "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid():
    result = docker_compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_the_validator_does_catch_mistakes(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("service_healthy", "service_happy", 1))
    result = docker_compose("config", "-q", compose_file=broken)
    assert result.returncode != 0 and "service_happy" in result.stderr


def test_every_build_uses_the_host_network(compose):
    """Builds reach the package registries through the host's network (RUN pip/apt-get)."""
    for name, svc in compose["services"].items():
        assert svc["build"].get("network") == "host", name


def test_the_limits_and_the_port_come_from_the_env_file(compose):
    env = {
        k: v
        for k, _, v in (
            line.partition("=")
            for line in (REPO_ROOT / ".env").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
    }
    services = compose["services"]
    port = services["nginx"]["ports"][0]
    if isinstance(port, str):  # compose v1 prints "HOST_IP:PUBLISHED:TARGET"
        host_ip, published, _ = port.split(":")
    else:
        host_ip, published = port["host_ip"], port["published"]
    assert (host_ip, str(published)) == (env["SKINDX_BIND"], env["SKINDX_HTTP_PORT"])
    for name in ("nginx", "api"):
        assert services[name]["environment"]["SKINDX_MAX_UPLOAD_MB"] == env["SKINDX_MAX_UPLOAD_MB"]
    assert (
        services["ui"]["environment"]["STREAMLIT_SERVER_MAX_UPLOAD_SIZE"]
        == env["SKINDX_MAX_UPLOAD_MB"]
    )
    assert services["nginx"]["environment"]["SKINDX_PREDICT_RATE"] == env["SKINDX_PREDICT_RATE"]
    assert services["nginx"]["environment"]["SKINDX_UI_SESSIONS"] == env["SKINDX_UI_SESSIONS"]
    # defined once: no other default for them in the compose file
    text = COMPOSE_FILE.read_text()
    for name in (
        "SKINDX_HTTP_PORT",
        "SKINDX_MAX_UPLOAD_MB",
        "SKINDX_PREDICT_RATE",
        "SKINDX_UI_SESSIONS",
    ):
        assert f"${{{name}:-" not in text, name


def test_long_running_services_are_read_only_with_a_tmpfs(compose):
    for name in LONG_RUNNING:
        svc = compose["services"][name]
        assert svc.get("read_only") is True, name
        assert any(str(t).startswith("/tmp") for t in svc.get("tmpfs", [])), name
        assert "no-new-privileges:true" in svc["security_opt"], name


def test_the_gpu_override_reserves_a_device_for_the_trainer():
    result = docker_compose(
        "-f",
        str(COMPOSE_FILE),
        "-f",
        str(REPO_ROOT / "docker-compose.gpu.yml"),
        "--profile",
        "train",
        "config",
    )
    assert result.returncode == 0, result.stderr
    trainer = yaml.safe_load(result.stdout)["services"]["trainer"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert devices and "gpu" in devices[0]["capabilities"]


def test_nginx_is_the_only_published_port(compose):
    published = {name for name, svc in compose["services"].items() if svc.get("ports")}
    assert published == {"nginx"}
    assert [
        p["target"] if isinstance(p, dict) else p for p in compose["services"]["nginx"]["ports"]
    ]


def test_services_have_healthchecks_restart_policies_and_wait_for_health(compose):
    services = compose["services"]
    for name in LONG_RUNNING:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert services[name].get("restart") == "unless-stopped", name
        assert services[name].get("cap_drop") == ["ALL"], name
    assert set(services["nginx"]["depends_on"]) == {"api", "ui", "mlflow"}
    for name, svc in services.items():
        for dependency, spec in (svc.get("depends_on") or {}).items():
            assert spec["condition"] == "service_healthy", f"{name} -> {dependency}"


def test_api_can_be_scaled(compose):
    api = compose["services"]["api"]
    assert "container_name" not in api and "ports" not in api  # `--scale api=3` needs both absent
    assert "resolver 127.0.0.11" in (REPO_ROOT / "nginx" / "Dockerfile").read_text()


def test_mlflow_keeps_its_store_and_artifacts_on_volumes_and_serves_under_mlflow(compose):
    """The store is PostgreSQL on its volume (was: SQLite on /mlflow/db, issue 14), the artifacts
    are served from the mlflow volume, the server asks for a login, secrets only from .secrets/."""
    mlflow = compose["services"]["mlflow"]
    targets = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in mlflow["volumes"]}
    assert {"/mlflow/artifacts"} <= targets
    postgres = compose["services"]["postgres"]
    pg_targets = {
        v["target"] if isinstance(v, dict) else v.split(":")[1] for v in postgres["volumes"]
    }
    assert "/var/lib/postgresql/data" in pg_targets
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    cmd = dockerfile_instructions(REPO_ROOT / "docker" / "mlflow.Dockerfile")["CMD"][-1]
    assert '"--static-prefix", "/mlflow"' in cmd
    assert '"--serve-artifacts", "--artifacts-destination", "/mlflow/artifacts"' in cmd
    entrypoint = (REPO_ROOT / "docker" / "mlflow" / "entrypoint.sh").read_text()
    assert "--app-name basic-auth" in entrypoint and "postgresql+psycopg2://" in entrypoint
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for name in ("postgres", "mlflow", "api", "trainer"):  # secrets: only from .secrets/
        assert raw[name]["env_file"] == [f".secrets/{name}.env"], name
        inline = raw[name].get("environment") or {}
        assert not [k for k in inline if "PASSWORD" in k or k == "SKINDX_PREDICTION_DB"], name


def test_trainer_runs_dvc_repro_against_mlflow_under_a_profile(compose):
    trainer = compose["services"]["trainer"]
    assert trainer["profiles"] == ["train"]
    assert trainer["command"] == ["dvc", "repro"]
    assert trainer["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000/mlflow"
    assert trainer["depends_on"]["mlflow"]["condition"] == "service_healthy"
    # its MLflow login: MLFLOW_TRACKING_USERNAME/PASSWORD from .secrets/trainer.env
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(trainer["environment"])
    assert not trainer["user"].startswith(("0:", "root"))


# --- Dockerfiles ---------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> dict[str, list[str]]:
    """INSTRUCTION -> argument strings, in order (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.setdefault(keyword.upper(), []).append(rest.strip())
    return found


def copy_sources(argument: str) -> list[str] | None:
    """The source paths of one COPY (None for COPY --from=<stage>)."""
    words = json.loads(argument) if argument.startswith("[") else argument.split()
    if any(w.startswith("--from=") for w in words):
        return None
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1]


def dockerignore_patterns(context: Path, dockerfile: Path) -> list[str]:
    """BuildKit's ignore file: <Dockerfile>.dockerignore beside the Dockerfile, else the
    context's .dockerignore."""
    own = dockerfile.with_name(dockerfile.name + ".dockerignore")
    ignore = own if own.exists() else context / ".dockerignore"
    if not ignore.exists():
        return []
    lines = (line.strip() for line in ignore.read_text().splitlines())
    return [line.rstrip("/") for line in lines if line and not line.startswith("#")]


def is_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatch(c, pattern) for c in candidates):
            ignored = not negated
    return ignored


def build_specs() -> list[tuple[str, Path, Path]]:
    spec = yaml.safe_load(COMPOSE_FILE.read_text())
    out = []
    for name, svc in spec["services"].items():
        build = svc["build"] if isinstance(svc["build"], dict) else {"context": svc["build"]}
        context = (REPO_ROOT / build["context"]).resolve()
        out.append((name, context, context / build.get("dockerfile", "Dockerfile")))
    return out


@pytest.mark.parametrize("service, context, dockerfile", build_specs(), ids=lambda v: str(v))
def test_dockerfile_copies_only_files_that_exist_and_runs_as_non_root(service, context, dockerfile):
    assert dockerfile.is_file(), f"{service}: {dockerfile.relative_to(REPO_ROOT)} is missing"
    instructions = dockerfile_instructions(dockerfile)
    ignored = dockerignore_patterns(context, dockerfile)
    copies = [s for arg in instructions.get("COPY", []) if (s := copy_sources(arg)) is not None]
    assert instructions.get("FROM"), f"{service}: {dockerfile.name} has no FROM"
    for sources in copies:
        for source in sources:
            assert list(context.glob(source.rstrip("/"))), (
                f"{service}: COPY {source} not in {context}"
            )
            assert not is_ignored(source, ignored), f"{service}: .dockerignore drops {source}"
    users = instructions.get("USER", [])
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{service} runs as root"
