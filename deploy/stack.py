"""`make serve`: the whole product as local processes on 127.0.0.1, run by honcho (Procfile).

    python -m deploy.stack              check, render nginx's config, build /docs/, exec honcho
    python -m deploy.stack --announce   (a Procfile process) wait for the stack, print its URL

The process twin of docker-compose.yml: the same nginx templates, the same deploy defaults (the
repository's .env: port, upload limit, rate limit, UI session cap; the environment overrides
them). nginx on SKINDX_HTTP_PORT is the one entry; the API, Streamlit and the MLflow UI listen on
free loopback ports behind it. Ctrl-C reaches honcho, which stops every process.
Other settings (environment): SKINDX_RUN_DIR (.run), SKINDX_MODEL_DIR (the API's, default
serving/model), SKINDX_MLFLOW_BACKEND_URI (sqlite:///mlflow.db), SKINDX_MLFLOW_ARTIFACTS
(mlartifacts), SKINDX_DOCS_SITE (site), SKINDX_READY_TIMEOUT (seconds, 300).
MLFLOW_TRACKING_URI, the variable the pipeline reads too, points the stack at another store: a
database URI (sqlite:///…, postgresql://…) becomes the local MLflow server's backend store; an
http(s) server (e.g. the compose one, http://host:5000/mlflow) is proxied under /mlflow/ instead
of starting a local server, and must serve under the /mlflow prefix (--static-prefix /mlflow);
give it as an IP address (nginx resolves a host name in a variable only with a resolver).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from skindx.config import load_params

ROOT = Path(__file__).resolve().parents[1]
NGINX_DIR = ROOT / "nginx"
ENV_FILE = ROOT / ".env"
PLACEHOLDER = re.compile(r"\$\{(SKINDX_[A-Z0-9_]+)\}")
FRAMING_KB = 64  # room for multipart headers on top of the files (nginx/entrypoint.sh: the same)


class StackError(RuntimeError):
    """Something the user must fix before the stack can start; the message says what."""


def render_template(text: str, values: Mapping[str, str]) -> str:
    """envsubst restricted to ${SKINDX_*}, like the nginx image's NGINX_ENVSUBST_FILTER; nginx's
    own $variables are left alone. A placeholder without a value is an error, not a blank."""
    missing = sorted({name for name in PLACEHOLDER.findall(text) if name not in values})
    if missing:
        raise StackError(f"no value for template placeholder(s): {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listened on a moment ago (the OS's pick); the one definition, used
    by the stack, the tests (tests/helpers/servers.py) and the benchmarks."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        # as servers do: connections of a stopped server in TIME_WAIT do not block the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def find_nginx() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if not found:
        raise StackError("nginx is not installed: run `make system-deps` (Debian's nginx)")
    return found


def render_nginx(prefix: Path, values: Mapping[str, str]) -> Path:
    """Write a local nginx prefix: nginx.conf, conf.d/skindx.conf, snippets/; returns nginx.conf."""
    for sub in ("conf.d", "snippets", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    for snippet in (NGINX_DIR / "snippets").glob("*.conf"):
        shutil.copyfile(snippet, prefix / "snippets" / snippet.name)
    site = (NGINX_DIR / "templates" / "skindx.conf.template").read_text()
    (prefix / "conf.d" / "skindx.conf").write_text(render_template(site, values))
    main = (NGINX_DIR / "templates" / "main.conf.template").read_text()
    conf = prefix / "nginx.conf"
    conf.write_text(render_template(main, values))
    write_operators_htpasswd(prefix / "operators.htpasswd", values)
    return conf


def write_operators_htpasswd(path: Path, values: Mapping[str, str]) -> None:
    """The operators' login of /prometheus/ and /monitoring/ (as nginx/entrypoint.sh writes it
    in the image): SKINDX_OPERATOR_USER (operator) with SKINDX_OPERATOR_PASSWORD, salted SHA-1
    ({SSHA}, a scheme nginx reads; the stdlib has no SHA-512 crypt). No password: empty, 401."""
    password = values.get("SKINDX_OPERATOR_PASSWORD", "")
    line = ""
    if password:
        user = values.get("SKINDX_OPERATOR_USER") or "operator"
        if ":" in user or any(c.isspace() for c in user):
            raise StackError(f"SKINDX_OPERATOR_USER={user!r} must not contain ':' or spaces")
        salt = os.urandom(16)
        digest = hashlib.sha1(password.encode() + salt).digest()
        line = f"{user}:{{SSHA}}{base64.b64encode(digest + salt).decode()}\n"
    path.touch(mode=0o600)
    path.write_text(line)


def check_nginx_config(nginx: str, conf: Path, prefix: Path) -> None:
    result = subprocess.run(
        [nginx, "-t", "-q", "-p", str(prefix), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        raise StackError(f"nginx rejects the rendered config {conf}:\n{result.stderr.strip()}")


def build_docs(site: Path) -> None:
    """The /docs/ site, as `make docs` builds it (MkDocs), or the older script where MkDocs's
    config is absent."""
    if (ROOT / "mkdocs.yml").is_file():
        command = [sys.executable, "-m", "mkdocs", "build", "--quiet", "--site-dir", str(site)]
    else:
        command = [sys.executable, str(ROOT / "scripts" / "build_docs.py"), "--out", str(site)]
    subprocess.run(command, check=True, cwd=ROOT)


def deploy_defaults(env_file: Path = ENV_FILE) -> dict[str, str]:
    """The repository's .env (the deploy defaults docker compose reads too)."""
    if not env_file.is_file():
        raise StackError(f"{env_file} is missing: it holds the deploy defaults (port, limits)")
    return {k: v for k, v in dotenv_values(env_file).items() if v is not None}


def body_limits(max_upload_mb: str, max_batch_files: str) -> dict[str, str]:
    """nginx's client_max_body_size for one upload and for a batch, from the MB limit."""
    try:
        mb, files = int(max_upload_mb), int(max_batch_files)
    except ValueError:
        raise StackError(
            "SKINDX_MAX_UPLOAD_MB and SKINDX_MAX_BATCH_FILES must be whole numbers, got "
            f"{max_upload_mb!r} and {max_batch_files!r}"
        ) from None
    return {
        "SKINDX_CLIENT_MAX_BODY": f"{mb * 1024 + FRAMING_KB}k",
        "SKINDX_BATCH_MAX_BODY": f"{mb * 1024 * files + FRAMING_KB}k",
    }


def mlflow_server(tracking_uri: str) -> str | None:
    """The host:port of an http(s) MLFLOW_TRACKING_URI (nginx proxies /mlflow/ there with the
    path unchanged, so the server must serve under /mlflow); None for a database URI."""
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return None
    if parts.scheme == "https" or parts.path.rstrip("/") != "/mlflow" or not parts.port:
        raise StackError(
            f"MLFLOW_TRACKING_URI={tracking_uri}: make serve proxies an MLflow server given as "
            "http://HOST:PORT/mlflow (started with --static-prefix /mlflow); unset it to run "
            "the local server"
        )
    return parts.netloc


def stack_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Every setting the Procfile and the nginx templates use: `environ` over the .env defaults."""
    environ = {**deploy_defaults(), **environ}
    run_dir = Path(environ.get("SKINDX_RUN_DIR", ROOT / ".run")).resolve()
    http_port = int(environ["SKINDX_HTTP_PORT"])
    api_port, ui_port, mlflow_port = free_port(), free_port(), free_port()
    prefix = run_dir / "nginx"
    tracking = environ.get("MLFLOW_TRACKING_URI", "")
    remote_mlflow = mlflow_server(tracking)
    local_backend = (
        tracking if tracking and not remote_mlflow else f"sqlite:///{ROOT / 'mlflow.db'}"
    )
    env = dict(environ)
    env.update(
        SKINDX_HTTP_PORT=str(http_port),
        SKINDX_RUN_DIR=str(run_dir),
        SKINDX_STACK_API_PORT=str(api_port),
        SKINDX_STACK_UI_PORT=str(ui_port),
        SKINDX_STACK_MLFLOW_PORT=str(mlflow_port),
        SKINDX_MLFLOW_BACKEND_URI=environ.get("SKINDX_MLFLOW_BACKEND_URI", local_backend),
        SKINDX_MLFLOW_REMOTE=remote_mlflow or "",
        SKINDX_MLFLOW_ARTIFACTS=str(
            Path(environ.get("SKINDX_MLFLOW_ARTIFACTS", ROOT / "mlartifacts")).resolve()
        ),
        SKINDX_DOCS_ROOT=str(Path(environ.get("SKINDX_DOCS_SITE", ROOT / "site")).resolve()),
        SKINDX_NGINX_PREFIX=str(prefix),
        SKINDX_NGINX_BIN=find_nginx(),
        SKINDX_NGINX_MIME_TYPES=environ.get("SKINDX_NGINX_MIME_TYPES", "/etc/nginx/mime.types"),
        # a root master would hand requests to `nobody`, who cannot read a private run dir
        SKINDX_NGINX_USER="user root;" if os.geteuid() == 0 else "",
        SKINDX_LISTEN=f"127.0.0.1:{http_port}",
        SKINDX_API_ADDR=f"127.0.0.1:{api_port}",
        SKINDX_UI_ADDR=f"127.0.0.1:{ui_port}",
        SKINDX_MLFLOW_ADDR=remote_mlflow or f"127.0.0.1:{mlflow_port}",
        # /prometheus/: an operator's own Prometheus, if one runs (compose runs its own)
        SKINDX_PROMETHEUS_ADDR=environ.get("SKINDX_PROMETHEUS_ADDR", "127.0.0.1:9090"),
        # /monitoring/: where `make monitor` writes (monitor.reports_dir of params.yaml)
        SKINDX_MONITORING_ROOT=str(
            ROOT / load_params(ROOT / "params.yaml")["monitor"]["reports_dir"]
        ),
        SKINDX_RESOLVER="",
        **body_limits(environ["SKINDX_MAX_UPLOAD_MB"], environ["SKINDX_MAX_BATCH_FILES"]),
        # Streamlit's uploader cap (MB), the same number the API and nginx use
        STREAMLIT_SERVER_MAX_UPLOAD_SIZE=environ["SKINDX_MAX_UPLOAD_MB"],
        API_URL=f"http://127.0.0.1:{api_port}",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    return env


def check_model(environ: Mapping[str, str]) -> Path:
    model_dir = Path(environ.get("SKINDX_MODEL_DIR", ROOT / "serving" / "model"))
    if not (model_dir / "model.json").is_file():
        raise StackError(
            f"no promoted model in {model_dir} (model.json missing): run `make run` to build one, "
            "or set SKINDX_MODEL_DIR to a packaged model"
        )
    return model_dir


def prepare(environ: Mapping[str, str]) -> dict[str, str]:
    """All checks and files before the processes start; returns their environment."""
    check_model(environ)
    env = stack_environment(environ)
    port = int(env["SKINDX_HTTP_PORT"])
    if not port_is_free(port):
        raise StackError(
            f"port {port} is already in use: stop what uses it or set SKINDX_HTTP_PORT"
        )
    build_docs(Path(env["SKINDX_DOCS_ROOT"]))
    prefix = Path(env["SKINDX_NGINX_PREFIX"])
    conf = render_nginx(prefix, env)
    check_nginx_config(env["SKINDX_NGINX_BIN"], conf, prefix)
    Path(env["SKINDX_MLFLOW_ARTIFACTS"]).mkdir(parents=True, exist_ok=True)
    return env


def entry_url(env: Mapping[str, str]) -> str:
    return f"http://127.0.0.1:{env['SKINDX_HTTP_PORT']}/"


def start(environ: Mapping[str, str]) -> None:
    env = prepare(environ)
    print(
        f"SkinDX: starting nginx, API, UI and MLflow; the product will be at {entry_url(env)}",
        flush=True,
    )
    honcho = shutil.which("honcho", path=env["PATH"])
    if not honcho:
        raise StackError("honcho is not installed in this environment: run `make install`")
    os.chdir(ROOT)
    # honcho becomes this process, so Ctrl-C (or SIGTERM) reaches it and it stops every child;
    # `-e /dev/null`: honcho would read ROOT/.env itself and let it override the environment
    command = ["start", "--no-colour", "-f", str(ROOT / "Procfile"), "-d", str(ROOT)]
    command += [
        "-e",
        os.devnull,
        *procfile_processes(remote_mlflow=bool(env["SKINDX_MLFLOW_REMOTE"])),
    ]
    os.execve(honcho, [honcho, *command], env)


def procfile_processes(*, remote_mlflow: bool) -> list[str]:
    """The Procfile's process names, without the local MLflow server when a remote one is used."""
    names = [
        line.split(":", 1)[0].strip()
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#") and ":" in line
    ]
    return [n for n in names if not (remote_mlflow and n == "mlflow")]


def wait_for(checks: Mapping[str, str], deadline: float) -> list[str]:
    """Poll each URL until it answers 200; returns the names still failing at the deadline."""
    pending = dict(checks)
    while pending and time.monotonic() < deadline:
        for name, url in list(pending.items()):
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        del pending[name]
            except (urllib.error.URLError, OSError):
                pass
        if pending:
            time.sleep(1.0)
    return [f"{name} ({url})" for name, url in pending.items()]


def announce(environ: Mapping[str, str]) -> int:
    """Wait for every service directly (quietly), then once more through nginx; print the URL."""
    url = entry_url(environ)
    direct = {
        "API": f"{environ['API_URL']}/ready",
        "UI": f"http://127.0.0.1:{environ['SKINDX_STACK_UI_PORT']}/_stcore/health",
        "MLflow": f"http://{environ['SKINDX_MLFLOW_ADDR']}/mlflow/health",
    }
    through_nginx = {
        "API via nginx": f"{url}ready",
        "UI via nginx": f"{url}_stcore/health",
        "MLflow via nginx": f"{url}mlflow/",
        "docs via nginx": f"{url}docs/",
    }
    deadline = time.monotonic() + float(environ.get("SKINDX_READY_TIMEOUT", 300))
    failing = wait_for(direct, deadline) or wait_for(through_nginx, deadline)
    if failing:
        print(
            f"SkinDX did not become ready: {', '.join(failing)} not answering; stopping.",
            flush=True,
        )
        return 1
    print(f"SkinDX is ready at {url}  (Ctrl-C stops everything)", flush=True)
    signal.pause()  # honcho stops the whole stack when any process exits: stay up
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve SkinDX locally behind one nginx port.")
    parser.add_argument("--announce", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.announce:
            return announce(os.environ)
        start(os.environ)
    except StackError as exc:
        print(f"make serve: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
