"""`python -m serving` with several uvicorn workers: /metrics adds up every worker's numbers
(prometheus_client's multiprocess mode), whichever worker answers the scrape."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import run_server

pytestmark = pytest.mark.slow  # two real uvicorn workers

PREDICTIONS = 12


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of metric `name` in a Prometheus text exposition."""
    found = []
    pattern = rf"^{name}(?:\{{(.*?)\}})? (\S+)$"
    for labels, value in re.findall(pattern, text, flags=re.MULTILINE):
        found.append((dict(re.findall(r'(\w+)="(.*?)"', labels)), float(value)))
    return found


def scrape(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def test_two_workers_report_one_sum(
    packaged_model_dir: Path, tmp_path: Path, monkeypatch, sample_jpeg
):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"left by an earlier run")  # must be wiped
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    with run_server(
        tmp_path, wait_ready=False, as_module=True, model_dir=packaged_model_dir, workers=2
    ) as server:
        # each worker loads the model itself; its model_info sample (labelled with its pid)
        # appears once it serves
        def two_workers_serve() -> bool:
            workers = {
                labels["pid"]
                for labels, value in samples(scrape(server.url), "skindx_model_info")
                if value == 1.0
            }
            return len(workers) == 2

        server.wait_until(two_workers_serve, 90, "serving from two ready workers")

        for _ in range(PREDICTIONS):  # a new connection each, so both workers take some
            files = {"file": ("lesion.jpg", sample_jpeg, "image/jpeg")}
            assert httpx.post(f"{server.url}/predict", files=files, timeout=30).status_code == 200

        for _ in range(6):  # whichever worker answers, the sums are the same
            text = scrape(server.url)
            answered = sum(
                value
                for labels, value in samples(text, "skindx_http_requests_total")
                if labels.get("route") == "/predict" and labels.get("status") == "200"
            )
            assert answered == PREDICTIONS
            batched = sum(value for _, value in samples(text, "skindx_inference_batch_size_count"))
            assert batched >= PREDICTIONS / 16
        assert not (metrics_dir / "counter_99999.db").exists()
