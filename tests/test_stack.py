"""deploy.stack (moved from src/skindx/stack.py): the nginx template rendering and the checks `make serve` makes before starting."""

from __future__ import annotations

import re
import socket
import subprocess

import pytest
import yaml

from deploy import stack
from tests.conftest import REPO_ROOT

TEMPLATES = sorted((REPO_ROOT / "nginx" / "templates").glob("*.template"))


def test_render_template_fills_skindx_placeholders_and_keeps_nginx_variables():
    text = "listen ${SKINDX_LISTEN};\nproxy_set_header Host $http_host; # ${request_id}\n"
    out = stack.render_template(text, {"SKINDX_LISTEN": "127.0.0.1:9"})
    assert out == "listen 127.0.0.1:9;\nproxy_set_header Host $http_host; # ${request_id}\n"


def test_render_template_names_every_missing_placeholder():
    with pytest.raises(stack.StackError, match="SKINDX_A, SKINDX_B"):
        stack.render_template("${SKINDX_B} ${SKINDX_A} ${SKINDX_C}", {"SKINDX_C": ""})


def local_env(tmp_path, **extra):
    environ = {
        "SKINDX_RUN_DIR": str(tmp_path / "run"),
        "SKINDX_DOCS_SITE": str(tmp_path / "site"),
        "SKINDX_HTTP_PORT": str(stack.free_port()),
        "PATH": "/usr/bin:/bin",
        **extra,
    }
    return stack.stack_environment(environ)


def test_rendered_local_config_passes_nginx_t(tmp_path):
    env = local_env(tmp_path)
    prefix = tmp_path / "run" / "nginx"
    conf = stack.render_nginx(prefix, env)
    stack.check_nginx_config(env["SKINDX_NGINX_BIN"], conf, prefix)  # raises on a bad config
    site = (prefix / "conf.d" / "skindx.conf").read_text()
    assert f"listen 127.0.0.1:{env['SKINDX_HTTP_PORT']} default_server;" in site
    assert f"default 127.0.0.1:{env['SKINDX_STACK_API_PORT']};" in site  # the API address map
    assert f"server 127.0.0.1:{env['SKINDX_STACK_UI_PORT']};" in site
    assert "${" not in site.replace("${request_id}", "")


def test_a_broken_config_is_reported_with_nginx_own_words(tmp_path):
    env = local_env(tmp_path)
    prefix = tmp_path / "run" / "nginx"
    conf = stack.render_nginx(prefix, env)
    site = prefix / "conf.d" / "skindx.conf"
    site.write_text(
        site.read_text().replace("client_max_body_size 10304k;", "client_max_body_size;")
    )
    with pytest.raises(stack.StackError, match="invalid number of arguments"):
        stack.check_nginx_config(env["SKINDX_NGINX_BIN"], conf, prefix)


def test_every_template_placeholder_has_a_value_in_the_nginx_image():
    """The container renders the same templates from the Dockerfile's ENV, the entry point's
    derived limits and compose's environment: none may be missing (the running image is
    checked for real in tests/containers)."""
    dockerfile = (REPO_ROOT / "nginx" / "Dockerfile").read_text()
    entrypoint = (REPO_ROOT / "nginx" / "entrypoint.sh").read_text()
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    env_names = set(re.findall(r"\b(SKINDX_[A-Z0-9_]+)=", dockerfile + entrypoint))
    env_names |= set(compose["services"]["nginx"]["environment"])
    for template in TEMPLATES:
        assert set(stack.PLACEHOLDER.findall(template.read_text())) <= env_names, template.name
    assert "resolver 127.0.0.11" in dockerfile  # Docker's DNS, for --scale api=N


def test_docker_flavoured_rendering_is_valid_nginx(tmp_path):
    """The image's resolver and a service name as the API address (looked up at run time, so
    `nginx -t` accepts it without Docker's DNS)."""
    env = local_env(tmp_path)
    env.update(
        SKINDX_RESOLVER="resolver 127.0.0.11 valid=5s ipv6=off;",
        SKINDX_PREDICT_RATE="5r/s",
        SKINDX_API_ADDR="api:8000",
        SKINDX_MLFLOW_ADDR="mlflow:5000",
    )
    prefix = tmp_path / "run" / "nginx"
    conf = stack.render_nginx(prefix, env)
    stack.check_nginx_config(env["SKINDX_NGINX_BIN"], conf, prefix)


def test_serve_without_a_model_says_how_to_get_one(tmp_path):
    with pytest.raises(stack.StackError, match="make run"):
        stack.prepare({"SKINDX_MODEL_DIR": str(tmp_path), "SKINDX_RUN_DIR": str(tmp_path / "r")})


def test_serve_on_a_busy_port_says_which(tmp_path, packaged_model_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(stack.StackError, match=f"port {port} is already in use"):
            stack.prepare(
                {
                    "SKINDX_MODEL_DIR": str(packaged_model_dir),
                    "SKINDX_RUN_DIR": str(tmp_path),
                    "SKINDX_HTTP_PORT": str(port),
                }
            )


def test_procfile_runs_the_four_services_and_the_announcer():
    names = [
        line.split(":", 1)[0]
        for line in (REPO_ROOT / "Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert names == ["mlflow", "api", "ui", "nginx", "ready"]


def test_stack_module_has_a_working_help():
    out = subprocess.run(
        [stack.sys.executable, "-m", "deploy.stack", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert out.returncode == 0 and "one nginx port" in out.stdout


def test_limits_come_from_the_env_file_and_the_environment_overrides_them(tmp_path):
    defaults = stack.deploy_defaults()
    env = local_env(tmp_path)
    mb = int(defaults["SKINDX_MAX_UPLOAD_MB"])
    assert env["SKINDX_CLIENT_MAX_BODY"] == f"{mb * 1024 + 64}k"
    assert env["STREAMLIT_SERVER_MAX_UPLOAD_SIZE"] == defaults["SKINDX_MAX_UPLOAD_MB"]
    assert env["SKINDX_PREDICT_RATE"] == defaults["SKINDX_PREDICT_RATE"]
    env = local_env(tmp_path, SKINDX_MAX_UPLOAD_MB="3", SKINDX_MAX_BATCH_FILES="2")
    assert env["SKINDX_CLIENT_MAX_BODY"] == "3136k" and env["SKINDX_BATCH_MAX_BODY"] == "6208k"
    prefix = tmp_path / "run" / "nginx"
    stack.render_nginx(prefix, env)
    site = (prefix / "conf.d" / "skindx.conf").read_text()
    assert "client_max_body_size 3136k;" in site and "limited to 3 MB per file" in site
    with pytest.raises(stack.StackError, match="whole numbers"):
        local_env(tmp_path, SKINDX_MAX_UPLOAD_MB="ten")
