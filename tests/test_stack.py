"""skindx.stack: the nginx template rendering and the checks `make serve` makes before starting."""

from __future__ import annotations

import re
import socket
import subprocess

import pytest

from skindx import stack
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
    assert f"server 127.0.0.1:{env['SKINDX_STACK_API_PORT']} ;" in site
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
    """The container renders the same template from the Dockerfile's ENV: none may be missing."""
    dockerfile = (REPO_ROOT / "nginx" / "Dockerfile").read_text()
    env_names = set(re.findall(r"\b(SKINDX_[A-Z0-9_]+)=", dockerfile))
    site = (REPO_ROOT / "nginx" / "templates" / "skindx.conf.template").read_text()
    assert set(stack.PLACEHOLDER.findall(site)) <= env_names
    assert "resolver 127.0.0.11" in dockerfile  # Docker's DNS, for --scale api=N


def test_docker_flavoured_rendering_is_valid_nginx(tmp_path):
    """The image's values, with loopback addresses for the service names (Debian's nginx has no
    `resolve`: that flag needs nginx >= 1.27.3, which the image has)."""
    env = local_env(tmp_path)
    env.update(
        SKINDX_RESOLVER="resolver 127.0.0.11 valid=10s ipv6=off;", SKINDX_PREDICT_RATE="5r/s"
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
        [stack.sys.executable, "-m", "skindx.stack", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "one nginx port" in out.stdout
