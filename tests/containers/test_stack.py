"""The compose stack for real: five images built from the two local bases, the stack up behind
its containerised nginx, then everything a user and an operator would try: the routes, the
limits, the UI in headless Chromium, hardening, healthchecks, scaling, a killed replica, a
restarted MLflow and the trainer. One stack for the module (tests/containers/conftest.py)."""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from tests.containers.conftest import SERVICES, ComposeStack, copy_checkout, write_secrets
from tests.e2e import test_browser as ui

# the first test also builds the images (a cold trainer build installs CUDA torch)
pytestmark = [pytest.mark.slow, pytest.mark.containers, pytest.mark.timeout(3600)]

browser = ui.browser  # the e2e suite's headless Chromium fixture, used here as is

MB = 1024 * 1024


def predict(client: httpx.Client, image: Path) -> httpx.Response:
    return client.post("predict", files={"file": (image.name, image.read_bytes(), "image/jpeg")})


def replica_predictions(stack: ComposeStack, container: str) -> float:
    """The replica's own count of answered predictions (its Prometheus counter, read inside
    the container: nginx does not publish /metrics)."""
    text = stack.exec(
        container,
        "python",
        "-c",
        "import urllib.request; print(urllib.request.urlopen("
        "'http://127.0.0.1:8000/metrics', timeout=5).read().decode())",
    )
    total = 0.0
    for line in text.splitlines():
        if line.startswith("skindx_http_requests_total{") and 'route="/predict"' in line:
            if 'status="200"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


# --- through the containerised nginx ----------------------------------------------------------


def test_health_ready_and_a_full_resolution_prediction(compose_stack, fullres_images):
    with compose_stack.client() as client:
        assert client.get("health").status_code == 200
        assert client.get("ready").status_code == 200
        image = fullres_images[0]
        assert Image.open(image).size == (600, 450)
        response = predict(client, image)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predicted_class"] in {c["code"] for c in compose_stack.model_card["classes"]}
    assert 0.0 <= body["confidence"] <= 1.0


def test_an_11_mb_upload_is_refused_with_413_and_a_text_file_with_415(compose_stack):
    with compose_stack.client() as client:
        big = client.post(
            "predict", files={"file": ("big.jpg", b"\xff\xd8" + b"0" * (11 * MB), "image/jpeg")}
        )
        text = client.post(
            "predict", files={"file": ("notes.txt", b"not an image\n", "text/plain")}
        )
    assert big.status_code == 413, big.text[:300]
    assert big.json()["code"] == "request_too_large"
    assert text.status_code == 415, text.text[:300]
    assert "detail" in text.json()


def test_api_docs_docs_site_and_mlflow_are_served_and_redirects_keep_the_port(compose_stack):
    with compose_stack.client() as client:
        api_docs = client.get("api-docs")
        docs = client.get("docs/")
        # MLflow asks for its login (tests/containers/test_mlflow_server.py: without it, 401)
        mlflow = client.get("mlflow/", auth=compose_stack.mlflow_auth)
        for path in ("docs", "mlflow"):
            redirect = client.get(path)
            assert redirect.status_code == 301
            # relative (absolute_redirect off): the browser stays on the published port
            assert redirect.headers["location"] == f"/{path}/"
    assert api_docs.status_code == 200 and "swagger" in api_docs.text.lower()
    external = re.findall(r"""(?:src|href)=["'](https?://[^"']+)""", api_docs.text)
    assert external == [], f"/api-docs loads assets from elsewhere: {external}"
    assert docs.status_code == 200 and "SkinDX" in docs.text
    assert mlflow.status_code == 200 and "mlflow" in mlflow.text.lower()


def test_private_routes_are_not_public(compose_stack):
    with compose_stack.client() as client:
        for path in ("metrics", "admin/reload", "_stcore/metrics"):
            assert client.get(path).status_code == 404, path


def test_the_served_model_is_the_promoted_one_and_the_image_says_so(compose_stack):
    card = compose_stack.model_card
    with compose_stack.client() as client:
        served = client.get("model").json()
    assert served["card_sha256"] == card["card_sha256"]
    labels = compose_stack.inspect(compose_stack.containers("api")[0])["Config"]["Labels"]
    assert labels["org.skindx.model.version"] == card["version"]
    assert labels["org.skindx.model.card_sha256"] == card["card_sha256"]
    assert labels["org.skindx.model.mlflow_run_id"] == str(card["lineage"]["mlflow_run_id"])
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", labels["org.opencontainers.image.revision"])
    image = compose_stack.inspect(compose_stack.containers("api")[0])["Config"]["Image"]
    assert image.endswith(f"/api:{compose_stack.env['SKINDX_API_TAG']}")


def test_limits_agree_in_nginx_the_api_and_streamlit(compose_stack):
    """One number (SKINDX_MAX_UPLOAD_MB in .env) reaches all three, read from each running
    container: nginx's rendered config, the API's settings, Streamlit's config."""
    mb = int(compose_stack.env.get("SKINDX_MAX_UPLOAD_MB") or env_default("SKINDX_MAX_UPLOAD_MB"))
    nginx = compose_stack.containers("nginx")[0]
    conf = compose_stack.exec(nginx, "cat", "/tmp/nginx/conf.d/skindx.conf")
    assert f"client_max_body_size {mb * 1024 + 64}k;" in conf
    api = compose_stack.containers("api")[0]
    api_bytes = compose_stack.exec(
        api,
        "python",
        "-c",
        "from serving.settings import Settings; s = Settings(); "
        "print(getattr(s, 'max_upload_bytes', None) or s.max_upload_mb * 1024 * 1024)",
    )
    assert int(api_bytes) == mb * MB
    ui = compose_stack.containers("ui")[0]
    # `streamlit config show` resolves the options as `streamlit run` does (config.toml, then
    # the STREAMLIT_* environment of the container), and says where each value came from
    shown = compose_stack.exec(ui, "streamlit", "config", "show")
    assert re.search(rf"^maxUploadSize = {mb}$", shown, re.M), shown[-2000:]


def env_default(name: str) -> str:
    from deploy.compose_wait import env_file_values

    return env_file_values()[name]


# --- hardening and health -----------------------------------------------------------------------


def test_every_service_is_healthy_non_root_and_hardened(compose_stack):
    for service in SERVICES:
        for name in compose_stack.containers(service):
            info = compose_stack.inspect(name)
            assert info["State"]["Health"]["Status"] == "healthy", name
            assert compose_stack.exec(name, "id", "-u").strip() != "0", f"{name} runs as root"
            host = info["HostConfig"]
            assert host["CapDrop"] == ["ALL"], name
            assert "no-new-privileges:true" in host["SecurityOpt"], name
            assert host["ReadonlyRootfs"] is True, name
            assert host["RestartPolicy"]["Name"] == "unless-stopped", name
            published = {k: v for k, v in (info["NetworkSettings"]["Ports"] or {}).items() if v}
            if service == "nginx":
                assert [b["HostIp"] for b in published["8080/tcp"]] == ["127.0.0.1"]
            else:
                assert published == {}, f"{name} publishes {published}"


def test_no_torch_in_the_api_and_ui_images(compose_stack):
    probe = "import importlib.util as u; print(u.find_spec('torch') is None)"
    for service in ("api", "ui"):
        name = compose_stack.containers(service)[0]
        assert compose_stack.exec(name, "python", "-c", probe).strip() == "True", service


# --- the UI in a real browser -------------------------------------------------------------------


def test_the_ui_analyzes_an_upload_in_headless_chromium(compose_stack, browser, fullres_images):
    image = fullres_images[1]
    with compose_stack.client() as client:
        expected = predict(client, image).json()
    ui.open_app(browser, compose_stack.url)
    ui.upload(browser, image)
    ui.click_analyze(browser)
    try:
        ui.wait(browser).until(
            EC.visibility_of_element_located((By.XPATH, ui.result_heading(expected)))
        )
    finally:
        shot = ui.save_screenshot(browser, "containers-analyze.png")
    assert shot.stat().st_size > 10_000
    assert compose_stack.model_card["version"] in ui.text_of(browser, "[data-testid=stSidebar]")


# --- scaling and faults -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_replicas(compose_stack) -> list[str]:
    compose_stack.run("up", "-d", "--no-recreate", "--scale", "api=3", timeout=420)
    compose_stack.wait_healthy()
    replicas = compose_stack.containers("api")
    assert len(replicas) == 3, replicas
    return replicas


def test_three_replicas_share_the_predictions(compose_stack, three_replicas, fullres_images):
    before = {r: replica_predictions(compose_stack, r) for r in three_replicas}
    # nginx looks the service name up again within its resolver's validity (5 s)
    time.sleep(6)
    with compose_stack.client() as client:
        statuses = [predict(client, fullres_images[i % 3]).status_code for i in range(30)]
    assert statuses == [200] * 30
    served = {r: replica_predictions(compose_stack, r) - before[r] for r in three_replicas}
    assert sum(served.values()) == 30, served
    assert all(n > 0 for n in served.values()), f"a replica got no request: {served}"


def test_nginx_keeps_photo_uploads_in_memory(compose_stack, three_replicas):
    """client_body_buffer_size holds a full-resolution photo: no temporary file per upload."""
    logs = subprocess.run(
        ["docker", "logs", compose_stack.containers("nginx")[0]], capture_output=True, text=True
    )
    assert "buffered to a temporary file" not in logs.stdout + logs.stderr


def test_killing_a_replica_during_traffic_loses_no_request(
    compose_stack, three_replicas, fullres_images
):
    n = 60
    victim = three_replicas[0]
    killed = threading.Event()

    def crash() -> None:
        """SIGKILL to the replica's main process from the host: a crash, which the restart
        policy answers (`docker kill` would count as a manual stop, which it does not)."""
        pid = compose_stack.inspect(victim)["State"]["Pid"]
        try:
            os.kill(pid, signal.SIGKILL)
        except PermissionError:  # not root on the host: the engine's kill, then a start
            subprocess.run(["docker", "kill", victim], capture_output=True, check=True)
            subprocess.run(["docker", "start", victim], capture_output=True, check=True)
        killed.set()

    def one(i: int) -> int:
        if i == n // 3:
            crash()
        with compose_stack.client() as client:
            return predict(client, fullres_images[i % 3]).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(one, range(n)))
    assert killed.is_set()
    assert statuses == [200] * n, {s: statuses.count(s) for s in set(statuses)}
    # the restart policy brings the crashed replica back
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = compose_stack.inspect(victim)["State"]
        if state["Running"] and (state.get("Health") or {}).get("Status") == "healthy":
            break
        time.sleep(2)
    else:
        pytest.fail(f"{victim} did not come back: {state}")


# --- the trainer and MLflow's volumes -----------------------------------------------------------


def mlflow_api(stack: ComposeStack, endpoint: str, **body) -> dict:
    """MLflow's REST API through nginx, logged in: POST for runs and experiments, GET for the
    registry."""
    url = f"mlflow/api/2.0/mlflow/{endpoint}"
    with stack.client(auth=stack.mlflow_auth) as client:
        if endpoint.startswith("registered-models/"):
            response = client.get(url, params=body)
        else:
            response = client.post(url, json=body)
    assert response.status_code == 200, response.text[:500]
    return response.json()


@pytest.fixture(scope="module")
def trained(compose_stack, quick_project, tmp_path_factory):
    """The quick pipeline's train..promote run again inside the trainer container, against the
    mlflow service, on a copy of the quick project owned by a non-root host user."""
    workspace = quick_project.copy_to(tmp_path_factory.mktemp("trainer") / "skindx").path
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:  # a root host (CI): the outputs belong to a non-root "host user" instead
        uid = gid = 10042
        subprocess.run(["chown", "-R", f"{uid}:{gid}", str(workspace)], check=True)
    env = {
        **compose_stack.env,
        "SKINDX_WORKSPACE": str(workspace),
        "SKINDX_SHARED_DATA": str(workspace / "data"),
        "SKINDX_UID": str(uid),
        "SKINDX_GID": str(gid),
    }
    stack = ComposeStack(**{**compose_stack.__dict__, "env": env})
    started = time.monotonic()
    result = stack.run(
        "--profile",
        "train",
        "run",
        "--rm",
        "trainer",
        "dvc",
        "repro",
        "--force",
        "--downstream",
        "train",
        timeout=1800,
    )
    compose_stack.timings["trainer_run_s"] = round(time.monotonic() - started, 1)
    yield workspace, uid, result
    shutil.rmtree(workspace.parent, ignore_errors=True)  # 1.4 GB of DVC cache and checkpoints


def test_the_trainer_run_and_its_model_appear_in_mlflow(compose_stack, trained):
    workspace, uid, _ = trained
    experiments = mlflow_api(compose_stack, "experiments/search", max_results=50)["experiments"]
    ids = [e["experiment_id"] for e in experiments if e["name"] == "skindx"]
    assert ids, [e["name"] for e in experiments]
    runs = mlflow_api(compose_stack, "runs/search", experiment_ids=ids, max_results=50)["runs"]
    finished = [r for r in runs if r["info"]["status"] == "FINISHED"]
    assert finished, [r["info"]["status"] for r in runs]
    assert any(r["data"].get("metrics") for r in finished)
    models = mlflow_api(compose_stack, "registered-models/search", max_results=50)
    assert models.get("registered_models"), models
    # the outputs are in the host checkout, owned by the host user
    card = workspace / "serving" / "model" / "model.json"
    assert card.is_file() and card.stat().st_uid == uid
    assert (workspace / "dvc.lock").stat().st_uid == uid


def test_restarting_mlflow_loses_no_run_or_model(compose_stack, trained):
    before = mlflow_api(compose_stack, "registered-models/search", max_results=50)
    compose_stack.run("restart", "mlflow", timeout=300)
    compose_stack.wait_healthy()
    after = mlflow_api(compose_stack, "registered-models/search", max_results=50)
    assert [m["name"] for m in after["registered_models"]] == [
        m["name"] for m in before["registered_models"]
    ]
    assert [m.get("latest_versions") for m in after["registered_models"]] == [
        m.get("latest_versions") for m in before["registered_models"]
    ]


def test_stopping_the_trainer_ends_its_mlflow_run(compose_stack, trained, quick_project, tmp_path):
    """docker stop (SIGTERM) reaches dvc and the stage through tini: the MLflow run ends (not
    left RUNNING) and the container exits before the grace period's kill."""
    workspace, uid, _ = trained
    env = {
        **compose_stack.env,
        "SKINDX_WORKSPACE": str(workspace),
        "SKINDX_UID": str(uid),
        "SKINDX_GID": str(uid),
        "SKINDX_SHARED_DATA": str(workspace / "data"),
    }
    stack = ComposeStack(**{**compose_stack.__dict__, "env": env})
    name = f"{compose_stack.project}-stopped-trainer"
    known = {r["info"]["run_id"] for r in all_runs(compose_stack)}
    stack.run(
        "--profile",
        "train",
        "run",
        "-d",
        "--name",
        name,
        "trainer",
        "dvc",
        "repro",
        "--force",
        "--single-item",
        "train",
        timeout=300,
    )
    try:
        deadline = time.monotonic() + 600
        running = []
        while time.monotonic() < deadline and not running:
            running = [
                r
                for r in all_runs(compose_stack)
                if r["info"]["run_id"] not in known and r["info"]["status"] == "RUNNING"
            ]
            time.sleep(2)
        assert running, "the trainer never started an MLflow run"
        started = time.monotonic()
        subprocess.run(["docker", "stop", "-t", "30", name], check=True, capture_output=True)
        stop_s = time.monotonic() - started
        assert stop_s < 25, f"docker stop took {stop_s:.0f} s: SIGTERM was not handled"
        status = {r["info"]["run_id"]: r["info"]["status"] for r in all_runs(compose_stack)}
        assert status[running[0]["info"]["run_id"]] in ("FAILED", "KILLED", "FINISHED")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def all_runs(stack: ComposeStack) -> list[dict]:
    experiments = mlflow_api(stack, "experiments/search", max_results=50)["experiments"]
    ids = [e["experiment_id"] for e in experiments]
    return mlflow_api(stack, "runs/search", experiment_ids=ids, max_results=200).get("runs", [])


# --- a fresh clone ------------------------------------------------------------------------------


def test_the_api_build_without_a_model_says_which_command_to_run(compose_stack, tmp_path_factory):
    """A fresh clone has no serving/model/ (git-ignored): the build stops with one line naming
    the command, not a traceback (the installed layers come from the cache)."""
    bare = copy_checkout(tmp_path_factory.mktemp("fresh") / "skindx")
    assert not (bare / "serving" / "model").exists()
    write_secrets(bare)  # as make api-image does first (make secrets)
    stack = ComposeStack(**{**compose_stack.__dict__, "directory": bare})
    result = stack.run("build", "api", check=False, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "no promoted model in serving/model/" in output and "make repro" in output
    assert "Traceback" not in output
