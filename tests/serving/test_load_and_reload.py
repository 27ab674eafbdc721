"""Concurrency, overload and hot reload under load against real uvicorn servers.

The admin token, refusal of a tampered or broken model and reload from no model moved to the
in-process tests (test_api.py); what needs real concurrent clients stays here."""

from __future__ import annotations

import asyncio
import io
import os
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.serving.conftest import ADMIN_TOKEN, Server, copy_package, run_server

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def small_jpeg(sample_jpeg: bytes, width: int = 96) -> bytes:
    image = Image.open(io.BytesIO(sample_jpeg)).convert("RGB")
    buffer = io.BytesIO()
    image.resize((width, width * 3 // 4)).save(buffer, "JPEG")
    return buffer.getvalue()


async def post_many(url: str, images: list[bytes], clients: int, per_client: int):
    """`clients` concurrent clients (one connection each), each posting `per_client` images."""

    async def one_client(index: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            responses = []
            for k in range(per_client):
                data = images[(index + k) % len(images)]
                files = {"file": ("lesion.jpg", data, "image/jpeg")}
                responses.append(await client.post("/predict", files=files))
            return responses

    batches = await asyncio.gather(*(one_client(i) for i in range(clients)))
    return [r for batch in batches for r in batch]


def metric(server: Server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_32_concurrent_clients_get_no_errors(server: Server, fullres_images: list[Path]):
    images = [p.read_bytes() for p in fullres_images[:8]]
    batches_before = metric(server, "skindx_inference_batch_size_count")
    responses = asyncio.run(post_many(server.url, images, clients=32, per_client=3))
    assert [r.status_code for r in responses] == [200] * 96, {r.text for r in responses}
    assert {r.json()["model_version"] for r in responses} == {"test-1"}
    batches = metric(server, "skindx_inference_batch_size_count") - batches_before
    assert batches < 96, "concurrent requests should share ONNX Runtime calls"


def test_overload_gets_503_with_retry_after_not_timeouts(
    packaged_model_dir_64: Path, tmp_path: Path, sample_jpeg: bytes
):
    settings = {"queue_size": 2, "max_batch": 1, "max_wait_ms": 0, "intra_op_threads": 1}
    with run_server(tmp_path, model_dir=packaged_model_dir_64, decode_threads=8, **settings) as srv:
        started = time.monotonic()
        responses = asyncio.run(post_many(srv.url, [small_jpeg(sample_jpeg)], 48, 2))
        elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    refused = [r for r in responses if r.status_code == 503]
    assert refused, "a queue of 2 under 48 concurrent clients must refuse some requests"
    assert 200 in statuses
    for response in refused:
        assert response.json()["code"] == "queue_full"
        assert response.headers["retry-after"] == "1"
    assert elapsed < 60


def swap_symlink(link: Path, target: Path) -> None:
    """Point `link` at `target` atomically (as a deployment would)."""
    staged = link.with_name(link.name + ".new")
    staged.unlink(missing_ok=True)
    staged.symlink_to(target)
    os.replace(staged, link)


@pytest.fixture
def reloadable(packaged_model_dir: Path, tmp_path: Path):
    """A server with the admin API on, whose model dir is a symlink we can repoint."""
    link = tmp_path / "current"
    swap_symlink(link, copy_package(packaged_model_dir, tmp_path / "v1"))
    with run_server(tmp_path, model_dir=link, admin_token=ADMIN_TOKEN) as srv:
        yield srv, link


def test_reload_under_load_drops_no_request(
    reloadable, packaged_model_dir_64: Path, tmp_path: Path, sample_jpeg: bytes
):
    srv, link = reloadable
    image = small_jpeg(sample_jpeg, 200)
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with srv.client() as client:
            while not stop.is_set():
                response = client.post("/predict", files={"file": ("a.jpg", image, "image/jpeg")})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["model_version"])

    workers = [threading.Thread(target=hammer) for _ in range(8)]
    for worker in workers:
        worker.start()
    try:
        while len(statuses) < 40:
            time.sleep(0.05)
        swap_symlink(link, copy_package(packaged_model_dir_64, tmp_path / "v2"))
        with srv.client() as client:
            reload = client.post("/admin/reload", headers=AUTH)
        seen_at_reload = len(statuses)
        while len(statuses) < seen_at_reload + 40:
            time.sleep(0.05)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    assert reload.status_code == 200, reload.text
    assert reload.json() == {
        "status": "reloaded",
        "previous_version": "test-1",
        "model_version": "test-2-64px",
    }
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert versions[0] == "test-1" and versions[-1] == "test-2-64px"
    switch = versions.index("test-2-64px")
    assert set(versions[switch + 8 :]) == {"test-2-64px"}  # at most the in-flight ones lag
    assert httpx.get(f"{srv.url}/model").json()["preprocessing"]["input_size"] == 64
