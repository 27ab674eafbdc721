"""Operating the stack for real: Prometheus finds every API replica through Docker's DNS, an
overloaded API (a queue of one image) answers 503 until the queue-full alert fires in
Prometheus' own API, and the monitor service's drift report is served under /monitoring/ to
operators only. Prometheus and the report are reached the way an operator reaches them: through
nginx, with the operators' login. The session stack (tests/containers/conftest.py) scrapes and
evaluates every 2 s with every `for:` at 0s, so nothing here waits minutes."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.containers.conftest import ComposeStack

pytestmark = [pytest.mark.slow, pytest.mark.containers, pytest.mark.timeout(1800)]

REPLICAS = 2
OVERLOAD_CLIENTS = 12


def operator(stack: ComposeStack) -> httpx.Client:
    return stack.client(auth=stack.operator_auth, timeout=30)


def wait_for(what: str, probe: Callable[[], object], timeout: float = 120, every: float = 1):
    """probe() until it returns something truthy; fail with the last value after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def api_targets(client: httpx.Client) -> list[dict]:
    r = client.get("prometheus/api/v1/targets", params={"state": "active"})
    r.raise_for_status()
    return [t for t in r.json()["data"]["activeTargets"] if t["labels"]["job"] == "skindx-api"]


def firing(client: httpx.Client, name: str) -> dict | None:
    r = client.get("prometheus/api/v1/alerts")
    r.raise_for_status()
    for alert in r.json()["data"]["alerts"]:
        if alert["labels"]["alertname"] == name and alert["state"] == "firing":
            return alert
    return None


def recreate_api(stack: ComposeStack, replicas: int, **env: str) -> None:
    """The api service recreated with `env` over the session's environment (compose passes it
    through docker-compose.yml), scaled to `replicas`; healthy again before returning."""
    saved = stack.env
    stack.env = {**saved, **env}
    try:
        stack.run("up", "-d", "--no-deps", "--scale", f"api={replicas}", "api", timeout=420)
    finally:
        stack.env = saved
    stack.wait_healthy()


@pytest.fixture(scope="module")
def tiny_queue_replicas(compose_stack) -> Iterator[list[str]]:
    """Two API replicas whose inference queue holds one image (SKINDX_QUEUE_SIZE=1); the
    session's single default replica again afterwards."""
    recreate_api(compose_stack, REPLICAS, SKINDX_QUEUE_SIZE="1")
    try:
        yield compose_stack.containers("api")
    finally:
        recreate_api(compose_stack, 1)


# --- privacy first: nothing of it is public ---------------------------------------------------


@pytest.mark.parametrize(
    "path", ["prometheus/", "prometheus/api/v1/alerts", "monitoring/", "monitoring/summary.json"]
)
def test_operators_routes_refuse_anonymous_and_wrong_logins(compose_stack, path):
    with compose_stack.client() as anonymous:
        r = anonymous.get(path)
        assert r.status_code == 401, (path, r.status_code)
        assert r.headers["www-authenticate"].startswith("Basic")
        user, _ = compose_stack.operator_auth
        assert anonymous.get(path, auth=(user, "not-the-password")).status_code == 401


def test_prometheus_publishes_no_port_and_runs_hardened(compose_stack):
    (name,) = compose_stack.containers("prometheus")
    info = compose_stack.inspect(name)
    assert not {k: v for k, v in (info["NetworkSettings"]["Ports"] or {}).items() if v}
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["HostConfig"]["CapDrop"] == ["ALL"]
    assert compose_stack.exec(name, "id", "-u").strip() != "0"
    # its TSDB is on the named volume, not in the container
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/var/lib/prometheus"]["Type"] == "volume"


# --- scrape targets and the queue-full alert --------------------------------------------------


def test_prometheus_scrapes_every_replica_found_through_docker_dns(
    compose_stack, tiny_queue_replicas
):
    assert len(tiny_queue_replicas) == REPLICAS
    with operator(compose_stack) as client:

        def all_up() -> list[dict] | None:
            found = api_targets(client)
            healthy = len(found) == REPLICAS and all(t["health"] == "up" for t in found)
            return found if healthy else None

        # the DNS lookup is refreshed every 10 s (prometheus/prometheus.yml)
        targets = wait_for(f"{REPLICAS} api targets up", all_up, timeout=90)
    addresses = {t["labels"]["instance"].rsplit(":", 1)[0] for t in targets}
    replica_ips = set()
    for name in tiny_queue_replicas:
        networks = compose_stack.inspect(name)["NetworkSettings"]["Networks"]
        replica_ips |= {n["IPAddress"] for n in networks.values()}
    assert addresses <= replica_ips, (addresses, replica_ips)


def test_an_overloaded_api_answers_503_and_the_queue_full_alert_fires(
    compose_stack, tiny_queue_replicas, fullres_images
):
    image: Path = fullres_images[0]
    body = image.read_bytes()
    stop = threading.Event()
    statuses: list[int] = []

    def hammer() -> None:
        with compose_stack.client(timeout=60) as client:
            while not stop.is_set():
                r = client.post("predict", files={"file": (image.name, body, "image/jpeg")})
                statuses.append(r.status_code)

    with operator(compose_stack) as prometheus:
        assert firing(prometheus, "SkindxQueueFull") is None, "fired before any overload"
        with concurrent.futures.ThreadPoolExecutor(OVERLOAD_CLIENTS) as pool:
            workers = [pool.submit(hammer) for _ in range(OVERLOAD_CLIENTS)]
            try:
                wait_for("a 503 from the full queue", lambda: 503 in statuses, timeout=120)
                alert = wait_for(
                    "SkindxQueueFull firing in /api/v1/alerts",
                    lambda: firing(prometheus, "SkindxQueueFull"),
                    timeout=120,
                    every=2,
                )
            finally:
                stop.set()
                for worker in workers:
                    worker.result()
    assert alert["labels"]["severity"] == "warning"
    assert "queue is full" in alert["annotations"]["summary"]
    assert float(alert["value"]) > 0.01
    assert statuses.count(200) > 0, "nothing was answered at all"
    assert set(statuses) <= {200, 503}, sorted(set(statuses))


# --- the drift report under /monitoring/ ------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_report(compose_stack, tiny_queue_replicas, fullres_images) -> dict:
    """The monitor service restarted (its loop runs at once) after enough predictions for a
    verdict (monitor.min_records, 30): its summary.json as nginx serves it."""
    with compose_stack.client() as client:
        for i in range(40):
            image = fullres_images[i % len(fullres_images)]
            r = client.post("predict", files={"file": (image.name, image.read_bytes())})
            assert r.status_code in (200, 503), r.text
    started = time.time()
    compose_stack.run("restart", "monitor", timeout=120)

    def summary() -> dict | None:
        with operator(compose_stack) as client:
            r = client.get("monitoring/summary.json")
        if r.status_code != 200:
            return None
        data = r.json()
        written = datetime.fromisoformat(data["generated_at"]).timestamp()
        return data if written >= started - 5 else None  # this restart's, not an older one

    return wait_for("a new drift report", summary, timeout=300, every=3)


def test_operators_read_the_drift_report_with_its_own_csp(compose_stack, fresh_report):
    assert fresh_report["status"] == "ok", fresh_report
    assert fresh_report["n_predictions"] >= 30
    with operator(compose_stack) as client:
        r = client.get("monitoring/")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert "Drifted Columns" in r.text  # Evidently's drift widget
        policies = r.headers.get_list("content-security-policy")
        report_policy = next(p for p in policies if "script-src" in p)
        assert "'unsafe-inline'" in report_policy and "default-src 'none'" in report_policy
        assert r.headers["cache-control"] == "no-store"
    with compose_stack.client() as public:
        ui = public.get("")
        assert ui.status_code == 200
        assert not any("unsafe-inline" in p for p in ui.headers.get_list("content-security-policy"))


def test_the_report_s_drift_score_reaches_prometheus(compose_stack, fresh_report):
    score = fresh_report["drift_score"]
    with operator(compose_stack) as client:

        def scraped() -> list | None:
            r = client.get("prometheus/api/v1/query", params={"query": "skindx_drift_score"})
            result = r.json()["data"]["result"]
            return result if len(result) == REPLICAS else None

        result = wait_for("skindx_drift_score from every replica", scraped, timeout=60)
    assert {round(float(s["value"][1]), 6) for s in result} == {round(score, 6)}
