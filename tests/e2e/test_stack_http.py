"""The stack through its one nginx port, with httpx: routing, limits, headers, hidden endpoints."""

from __future__ import annotations

import contextlib
import re
import time

import httpx
import pytest

from skindx.inference.classes import CLASS_CODES, CLASS_INFO
from tests.e2e.conftest import UI_SESSIONS

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "SAMEORIGIN",
    "content-security-policy": "frame-ancestors 'self'",
    "referrer-policy": "strict-origin-when-cross-origin",
}


@pytest.mark.parametrize(
    "path, marker",
    [
        ("health", '"status":"ok"'),
        ("ready", '"status":"ready"'),
        ("api-docs", "swagger"),
        ("openapi.json", '"/predict"'),
        ("model", '"version":"test-1"'),
        ("mlflow/", "<html"),
        ("docs/", "<title>SkinDX</title>"),  # the MkDocs site
        ("docs/contracts.html", "Contracts between the pieces"),
        ("", "<title>Streamlit</title>"),
    ],
)
def test_every_route_answers_through_nginx(stack, path, marker):
    with stack.client() as client:
        response = client.get(path)
    assert response.status_code == 200, response.text[:300]
    assert marker.lower() in response.text.lower().replace(": ", ":")


def test_mlflow_ui_assets_load_under_the_static_prefix(stack):
    with stack.client() as client:
        index = client.get("mlflow/").text
        assets = re.findall(r'(?:src|href)="(?:\./|/mlflow/)?(static-files/[^"]+\.js)"', index)
        assert assets, index[:500]
        assert client.get(f"mlflow/{assets[0]}").status_code == 200
        assert client.get("mlflow").headers.get("location", "").endswith("/mlflow/")


def test_predict_classifies_a_full_resolution_sample(stack, fullres_images):
    image = fullres_images[-1]
    with stack.client() as client:
        response = client.post(
            "predict", files={"file": (image.name, image.read_bytes(), "image/jpeg")}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predicted_class"] in CLASS_CODES
    assert body["predicted_name"] == CLASS_INFO[body["predicted_class"]].name
    assert abs(sum(p["probability"] for p in body["probabilities"]) - 1) < 1e-4
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value


def api_posts(stack) -> float:
    """POST requests the API itself has counted (its Prometheus counter, read directly)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{stack.upstream('api')}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "skindx_http_requests"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("method") == "POST"
    )


def test_an_11_mb_upload_is_refused_by_nginx_before_the_api(stack):
    big = {"file": ("big.jpg", b"\xff" * (11 * 1024 * 1024), "image/jpeg")}
    before = api_posts(stack)
    with stack.client() as client:
        response = client.post("predict", files=big)
    assert response.status_code == 413
    assert response.json() == {
        "detail": "request body too large: uploads are limited to 10 MB per file",
        "code": "request_too_large",
    }
    assert api_posts(stack) == before  # never reached the API
    # ...which would have counted it: the same upload sent to the API directly
    direct = httpx.post(f"{stack.upstream('api')}/predict", files=big, timeout=30)
    assert direct.status_code == 413 and api_posts(stack) == before + 1


@pytest.mark.parametrize("path", ["metrics", "admin/reload", "admin", "_stcore/metrics"])
def test_internal_endpoints_are_not_exposed(stack, path):
    with stack.client() as client:
        assert client.get(path).status_code == 404
        assert client.post(path).status_code == 404
    if path == "metrics":  # nginx hides it: the API itself does serve it
        assert httpx.get(f"{stack.upstream('api')}/metrics", timeout=10).status_code == 200


def test_ui_sets_a_sticky_session_cookie_once(stack):
    with stack.client() as client:
        first = client.get("")
        cookie = first.cookies.get("skindx_ui")
        assert cookie and re.fullmatch(r"[0-9a-f]{32}", cookie)
        assert "HttpOnly" in first.headers["set-cookie"]
        second = client.get("")
        assert "set-cookie" not in second.headers  # the browser already has it
        for name, value in SECURITY_HEADERS.items():
            assert second.headers.get(name) == value


def websocket_headers(stack) -> dict[str, str]:
    host = stack.url.split("//")[1].rstrip("/")
    return {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Origin": f"http://{host}",
    }


def test_streamlit_websocket_upgrade_passes_through(stack):
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "GET", f"{stack.url}_stcore/stream", headers=websocket_headers(stack)
        ) as response,
    ):
        assert response.status_code == 101
        assert response.headers["upgrade"].lower() == "websocket"


def test_open_ui_sessions_per_client_are_capped(stack):
    """The UI calls the API from its server, past nginx's rate limit; the cap on open sessions
    (one analysis at a time each) bounds that load per client."""
    with contextlib.ExitStack() as sessions, httpx.Client(timeout=10) as client:
        statuses = []
        for _ in range(UI_SESSIONS + 1):
            response = sessions.enter_context(
                client.stream("GET", f"{stack.url}_stcore/stream", headers=websocket_headers(stack))
            )
            statuses.append(response.status_code)
    assert statuses == [101] * UI_SESSIONS + [429]
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "GET", f"{stack.url}_stcore/stream", headers=websocket_headers(stack)
        ) as again,
    ):
        assert again.status_code == 101  # closed sessions free their places


def test_prediction_routes_are_rate_limited(stack):
    """Run last in this module: it spends the client's burst, then waits for it to refill."""
    with stack.client() as client:
        statuses = [client.post("predict").status_code for _ in range(40)]
    assert 429 in statuses and 422 in statuses  # the API answered some, nginx refused the rest
    time.sleep(3)  # 10 r/s refills the burst for the tests that follow
