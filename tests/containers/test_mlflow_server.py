"""The compose MLflow as a team shares it: PostgreSQL backend store, artifacts served by the
tracking server (mlflow-artifacts:/ URIs, no shared filesystem), and a login on the door
(MLflow's basic-auth app). Everything goes through the stack's nginx on its one published port,
as a teammate's laptop would; the login is the stack's own, from its .secrets/ (conftest).

The two pipeline runs are real quick-profile `dvc repro` runs in two host processes at the same
time, on two copies of the session's quick project, against the compose server."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import VENV_BIN
from tests.containers.conftest import ComposeStack

pytestmark = [pytest.mark.slow, pytest.mark.containers, pytest.mark.timeout(3600)]

EXPERIMENT = "skindx"
ALIAS = "champion"
METRIC = "balanced_accuracy"
AJAX = "mlflow/ajax-api/2.0/mlflow"


def mlflow(stack: ComposeStack, method: str, endpoint: str, missing_ok=False, **body) -> dict:
    """MLflow's REST API through nginx, logged in; fails the test on anything but 200 (or
    returns {} for a 404 when `missing_ok`)."""
    with stack.client(auth=stack.mlflow_auth) as client:
        if method == "GET":
            response = client.get(f"{AJAX}/{endpoint}", params=body)
        else:
            response = client.post(f"{AJAX}/{endpoint}", json=body)
    if missing_ok and response.status_code == 404:
        return {}
    assert response.status_code == 200, f"{endpoint}: {response.status_code} {response.text[:500]}"
    return response.json()


def psql(stack: ComposeStack, database: str, sql: str) -> str:
    """A query as PostgreSQL's superuser over the container's socket (peer: no password)."""
    container = stack.containers("postgres")[0]
    return stack.exec(container, "psql", "-X", "-qAt", "-d", database, "-c", sql).strip()


# --- the lock on the door -----------------------------------------------------------------------


def test_anonymous_reads_and_writes_get_401_and_change_nothing(compose_stack):
    registry = mlflow(compose_stack, "GET", "registered-models/search", max_results=100)
    before = {m["name"]: m.get("aliases") for m in registry.get("registered_models", [])}
    writes = [
        ("experiments/create", {"name": "anonymous-was-here"}),
        ("registered-models/alias", {"name": "skindx-resnet50", "alias": ALIAS, "version": "1"}),
        ("registered-models/create", {"name": "anonymous-model"}),
        ("runs/create", {"experiment_id": "0"}),
    ]
    with compose_stack.client() as anonymous:
        assert anonymous.get("mlflow/health").status_code == 200  # the healthcheck's route
        ui = anonymous.get("mlflow/")
        reads = [
            anonymous.get(f"{AJAX}/experiments/search", params={"max_results": 10}),
            anonymous.get(f"{AJAX}/registered-models/search", params={"max_results": 10}),
            anonymous.get("mlflow/api/2.0/mlflow/experiments/get-by-name?experiment_name=skindx"),
        ]
        posts = [anonymous.post(f"{AJAX}/{endpoint}", json=body) for endpoint, body in writes]
        wrong = anonymous.post(
            f"{AJAX}/experiments/create",
            json={"name": "wrong-password"},
            auth=(compose_stack.mlflow_auth[0], "not-the-password"),
        )
    assert ui.status_code == 401
    # the browser's login prompt: nginx passes MLflow's challenge on
    assert ui.headers.get("www-authenticate", "").lower().startswith("basic")
    for response in (*reads, *posts, wrong):
        assert response.status_code == 401, (response.request.url, response.text[:300])
    experiments = mlflow(compose_stack, "POST", "experiments/search", max_results=100)
    names = {e["name"] for e in experiments.get("experiments", [])}
    assert not {"anonymous-was-here", "wrong-password"} & names
    registry = mlflow(compose_stack, "GET", "registered-models/search", max_results=100)
    after = {m["name"]: m.get("aliases") for m in registry.get("registered_models", [])}
    assert after == before


def test_the_login_passes_nginx_and_the_store_is_postgresql(compose_stack):
    """Logged in, the same UI and API answer through nginx; the experiment lands in the
    `mlflow` database of the postgres service (no SQLite file in the mlflow container)."""
    with compose_stack.client(auth=compose_stack.mlflow_auth) as client:
        assert client.get("mlflow/").status_code == 200
    name = f"login-check-{int(time.time())}"
    created = mlflow(compose_stack, "POST", "experiments/create", name=name)
    stored = psql(
        compose_stack, "mlflow", f"SELECT artifact_location FROM experiments WHERE name = '{name}'"
    )
    assert stored.startswith("mlflow-artifacts:"), stored
    mlflow(compose_stack, "POST", "experiments/delete", experiment_id=created["experiment_id"])
    container = compose_stack.containers("mlflow")[0]
    found = compose_stack.exec(container, "find", "/mlflow", "/tmp", "-name", "*.db")
    assert found.strip() == "", found
    # the users live in PostgreSQL too (the auth app's database_uri), in their own database
    assert psql(compose_stack, "mlflow_auth", "SELECT count(*) FROM users WHERE is_admin") == "1"


def test_the_admin_adds_a_user_who_can_then_log_in(compose_stack):
    """README's command: MLflow's auth client (mlflow.server.get_app_client) logged in as the
    admin through nginx creates a user; that user reads and writes, a wrong password does not."""
    from mlflow.server import get_app_client

    admin, password = compose_stack.mlflow_auth
    user, user_password = "teammate", "a-long-enough-password"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_USERNAME", admin)
        mp.setenv("MLFLOW_TRACKING_PASSWORD", password)
        auth = get_app_client("basic-auth", tracking_uri=f"{compose_stack.url}mlflow")
        auth.create_user(username=user, password=user_password)
        try:
            with compose_stack.client(auth=(user, user_password)) as client:
                found = client.get(f"{AJAX}/experiments/search", params={"max_results": 5})
                made = client.post(f"{AJAX}/experiments/create", json={"name": "teammate-exp"})
            with compose_stack.client(auth=(user, "not-" + user_password)) as client:
                refused = client.get(f"{AJAX}/experiments/search", params={"max_results": 5})
        finally:
            auth.delete_user(username=user)
    assert found.status_code == 200, found.text[:300]
    assert made.status_code == 200, made.text[:300]
    assert refused.status_code == 401
    mlflow(compose_stack, "POST", "experiments/delete", experiment_id=made.json()["experiment_id"])


# --- a team's registry: two pipeline runs at once -----------------------------------------------


def run_against_server(project: Path, env: dict[str, str]) -> subprocess.Popen:
    """train..promote again in `project` (a copy of the quick project) against the server."""
    return subprocess.Popen(
        [str(VENV_BIN / "dvc"), "repro", "--force", "--downstream", "train"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def two_runs(compose_stack, quick_project, tmp_path_factory):
    """Two quick pipeline runs started together in two host processes, each in its own copy of
    the quick project (the second with another learning rate, so the models differ), logged in
    with the stack's credentials from the environment."""
    user, password = compose_stack.mlflow_auth
    known = {r["info"]["run_id"] for r in experiment_runs(compose_stack)}
    versions_before = {v["version"] for v in model_versions(compose_stack)}
    procs = {}
    started = time.monotonic()
    for name, lr in (("a", None), ("b", 0.01)):
        copy = quick_project.copy_to(tmp_path_factory.mktemp(f"team-{name}") / "skindx")
        if lr is not None:
            params = yaml.safe_load((copy.path / "params.yaml").read_text())
            params["train"]["lr"] = lr
            (copy.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        # the copy's serving/model is the quick project's own SQLite-registry v1: gone, so
        # that promote reads the champion from the server's registry only
        subprocess.run(["rm", "-rf", str(copy.path / "serving" / "model")], check=True)
        env = {
            **copy.env,
            "MLFLOW_TRACKING_URI": f"{compose_stack.url}mlflow",
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": password,
        }
        procs[name] = (copy.path, run_against_server(copy.path, env))
    outputs = {}
    for name, (path, proc) in procs.items():
        out, _ = proc.communicate(timeout=1800)
        assert proc.returncode == 0, f"run {name} failed:\n{out[-6000:]}"
        outputs[name] = (path, out)
    compose_stack.timings["two_team_runs_s"] = round(time.monotonic() - started, 1)
    runs = [r for r in experiment_runs(compose_stack) if r["info"]["run_id"] not in known]
    versions = [v for v in model_versions(compose_stack) if v["version"] not in versions_before]
    yield outputs, runs, versions
    for path, _ in outputs.values():  # 1.7 GB each of DVC cache and checkpoints
        shutil.rmtree(path.parent, ignore_errors=True)


def experiment_runs(stack: ComposeStack) -> list[dict]:
    found = mlflow(
        stack, "GET", "experiments/get-by-name", missing_ok=True, experiment_name=EXPERIMENT
    )
    if not found:
        return []
    return mlflow(
        stack,
        "POST",
        "runs/search",
        experiment_ids=[found["experiment"]["experiment_id"]],
        max_results=500,
    ).get("runs", [])


def model_versions(stack: ComposeStack) -> list[dict]:
    models = mlflow(stack, "GET", "registered-models/search", max_results=100)
    versions = []
    for model in models.get("registered_models", []):
        found = mlflow(
            stack, "GET", "model-versions/search", filter=f"name='{model['name']}'", max_results=500
        )
        versions += found.get("model_versions", [])
    return versions


def tags(entity: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in entity.get("tags", [])}


def test_two_runs_at_once_lose_no_write(compose_stack, two_runs):
    """Both runs, their metrics and their registered versions are there; each promote decision
    was taken against a champion that really held the alias (serially consistent: one promoted
    as the first champion, the other judged against it), and the alias ends where that rule
    puts it: on the better version unless the rule found it not significantly better."""
    _, runs, versions = two_runs
    finished = [r for r in runs if r["info"]["status"] == "FINISHED"]
    assert len(finished) == 2, [(r["info"]["run_name"], r["info"]["status"]) for r in runs]
    for run in finished:
        metrics = {m["key"] for m in run["data"].get("metrics", [])}
        assert f"test_{METRIC}" in metrics, sorted(metrics)
        assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:"), run["info"]
    assert len(versions) == 2, versions
    assert {v["run_id"] for v in versions} == {r["info"]["run_id"] for r in finished}
    name = versions[0]["name"]
    by_version = {v["version"]: tags(v) for v in versions}
    for version, vtags in by_version.items():
        assert {"card_sha256", f"metric.{METRIC}", "promotion.decision"} <= set(vtags), (
            version,
            sorted(vtags),
        )
    first = [v for v, t in by_version.items() if t["promotion.champion_version"] == "none"]
    assert len(first) == 1, (
        f"both runs saw no champion and both promoted (a lost update): {by_version}"
    )
    (first,) = first
    (second,) = set(by_version) - {first}
    assert by_version[first]["promotion.decision"] == "promoted"
    assert by_version[second]["promotion.champion_version"] == first, by_version
    expected = second if by_version[second]["promotion.decision"] == "promoted" else first
    model = mlflow(compose_stack, "GET", "registered-models/get", name=name)["registered_model"]
    aliases = {a["alias"]: a["version"] for a in model.get("aliases", [])}
    assert aliases.get(ALIAS) == expected, (aliases, by_version)
    value = {v: float(t[f"metric.{METRIC}"]) for v, t in by_version.items()}
    if value[second] > value[first] + 0.005:
        # the better one came second: it keeps the alias off only when not significant
        assert expected == second or "not significant" in by_version[second]["promotion.reason"]
    else:
        assert expected == first, (value, by_version)


def test_their_artifacts_download_through_the_server(compose_stack, two_runs, tmp_path):
    """The registered packages come back over HTTP (mlflow-artifacts:/ through nginx, logged
    in): the card each version was registered with, byte for byte the digest in its tags."""
    import mlflow as mlflow_client

    from skindx.inference.model import card_digest

    _, _, versions = two_runs
    user, password = compose_stack.mlflow_auth
    uri = f"{compose_stack.url}mlflow"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_USERNAME", user)
        mp.setenv("MLFLOW_TRACKING_PASSWORD", password)
        for version in versions:
            vtags = tags(version)
            local = mlflow_client.artifacts.download_artifacts(
                run_id=version["run_id"],
                artifact_path=f"{vtags['package_artifact_path']}/model.json",
                dst_path=str(tmp_path / version["version"]),
                tracking_uri=uri,
            )
            card = json.loads(Path(local).read_text())
            assert card_digest(card) == vtags["card_sha256"]
    # and not without the login
    artifact = f"mlflow/ajax-api/2.0/mlflow-artifacts/artifacts/{versions[0]['run_id']}"
    with compose_stack.client() as anonymous:
        assert anonymous.get(artifact).status_code == 401


def test_each_promote_installed_the_champion_it_decided_on(two_runs):
    """A run whose candidate lost restored the champion from the server (serving/model came
    back over mlflow-artifacts), one that won installed its own: each checkout serves a
    registered version."""
    outputs, _, versions = two_runs
    registered = {v["version"] for v in versions}
    for _name, (path, _out) in outputs.items():
        card = json.loads((path / "serving" / "model" / "model.json").read_text())
        assert str(card["version"]) in registered


def test_the_registry_survives_restarting_mlflow_on_its_postgres_volume(compose_stack, two_runs):
    _, runs, versions = two_runs
    name = versions[0]["name"]
    before = mlflow(compose_stack, "GET", "registered-models/get", name=name)["registered_model"]
    volume = {
        m["Destination"]: m.get("Name")
        for m in compose_stack.inspect(compose_stack.containers("postgres")[0])["Mounts"]
    }
    assert volume["/var/lib/postgresql/data"] == f"{compose_stack.project}_postgres-data"
    # the database first, then the server (a server restarted next to a restarting database
    # would exit and be restarted by its policy: a healthcheck race, not a test of the volume)
    for service in ("postgres", "mlflow"):
        compose_stack.run("restart", service, timeout=300)
        compose_stack.wait_healthy()
    after = mlflow(compose_stack, "GET", "registered-models/get", name=name)["registered_model"]
    assert after.get("aliases") == before.get("aliases")
    assert after["latest_versions"] == before["latest_versions"]
    ids = {r["info"]["run_id"] for r in experiment_runs(compose_stack)}
    assert {r["info"]["run_id"] for r in runs} <= ids
    # the login too (the users are in PostgreSQL, not in the container)
    with compose_stack.client() as anonymous:
        assert anonymous.get(f"{AJAX}/experiments/search").status_code == 401
    assert mlflow(compose_stack, "POST", "experiments/search", max_results=5)


def test_the_prediction_log_is_in_postgresql_with_its_migration(compose_stack, fullres_images):
    """The API's default prediction log in compose: the `predlog` database, migrated by Alembic
    when the API started; a prediction through nginx lands there (also after the database's
    restart above, when the module runs in order)."""
    assert psql(compose_stack, "predlog", "SELECT count(*) FROM alembic_version") == "1"
    image = fullres_images[0]
    with compose_stack.client() as client:
        response = client.post(
            "predict", files={"file": (image.name, image.read_bytes(), "image/jpeg")}
        )
    assert response.status_code == 200, response.text[:300]
    request_id = response.headers["x-request-id"]
    assert "'" not in request_id  # it goes into the query below
    deadline = time.monotonic() + 30
    found = ""
    while time.monotonic() < deadline and not found:
        found = psql(
            compose_stack,
            "predlog",
            f"SELECT predicted_class FROM predictions WHERE http_request_id = '{request_id}'",
        )
        time.sleep(0.5)
    assert found == response.json()["predicted_class"], f"{request_id} not in predlog: {found!r}"


def test_no_secret_is_in_the_images_or_the_repository(compose_stack):
    """The passwords are the stack's own (.secrets/, git-ignored, mode 600), in no image."""
    secrets_dir = compose_stack.secrets_dir
    assert secrets_dir.stat().st_mode & 0o777 == 0o700
    for path in secrets_dir.glob("*.env"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".secrets/mlflow.env"], cwd=Path(__file__).parents[2]
    )
    assert ignored.returncode == 0, ".secrets/ is not git-ignored"
    password = compose_stack.mlflow_auth[1]
    for service in ("mlflow", "postgres"):
        image = compose_stack.inspect(compose_stack.containers(service)[0])["Config"]["Image"]
        history = subprocess.run(
            ["docker", "history", "--no-trunc", image], capture_output=True, text=True, check=True
        ).stdout
        assert password not in history
    # a request that fails the login is not logged with the password either
    with httpx.Client(base_url=compose_stack.url, timeout=30) as client:
        client.get(f"{AJAX}/experiments/search", auth=("nobody", "x"))
    logs = compose_stack.run("logs", "--no-color", "mlflow", "postgres", "nginx").stdout
    assert password not in logs
