"""Prometheus metrics of one app instance (its own registry, so apps in tests don't collide).

With several uvicorn workers (`python -m serving`, SKINDX_WORKERS > 1) the numbers must add up
across processes: `python -m serving` then sets PROMETHEUS_MULTIPROC_DIR, every worker writes
its values there (prometheus_client's multiprocess mode) and /metrics reports the sum of all.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def multiprocess_mode() -> bool:
    """prometheus_client chose its multiprocess value store when first imported."""
    return bool(os.environ.get(MULTIPROCESS_ENV))


class DriftSummaryCollector(Collector):
    """The drift monitor's last summary.json (`python -m skindx.monitor` writes it atomically)
    as gauges, read at each scrape: the API computes no drift itself, and a new report shows at
    the next scrape. Nothing is exported before a report exists or while its window had too few
    records (drift_score null), so an alert on the score never fires on a missing value."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        if self.path is None:
            return
        try:
            summary = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        score, detected = summary.get("drift_score"), summary.get("drift_detected")
        if isinstance(score, int | float) and not isinstance(score, bool):
            yield GaugeMetricFamily(
                "skindx_drift_score",
                "Share of image statistics that drifted in the last drift report (0..1)",
                value=float(score),
            )
        if isinstance(detected, bool):
            yield GaugeMetricFamily(
                "skindx_drift_detected",
                "1 when the last drift report raised an input or prediction drift alarm",
                value=float(detected),
            )
        try:
            generated = datetime.fromisoformat(summary["generated_at"]).timestamp()
        except (KeyError, TypeError, ValueError):
            return
        yield GaugeMetricFamily(
            "skindx_drift_report_timestamp_seconds",
            "When the last drift report was written (Unix time)",
            value=generated,
        )


class ServingMetrics:
    def __init__(self, drift_summary: Path | None = None) -> None:
        self.registry = CollectorRegistry()
        self.drift = DriftSummaryCollector(drift_summary)
        self.registry.register(self.drift)
        self.multiprocess = multiprocess_mode()
        self._versions: set[str] = set()
        r = self.registry
        self.requests = Counter(
            "skindx_http_requests_total",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "skindx_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "skindx_http_requests_in_flight",
            "HTTP requests being handled",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rejections = Counter(
            "skindx_rejections_total",
            "Requests or files refused, by error code",
            ["code"],
            registry=r,
        )
        self.batch_size = Histogram(
            "skindx_inference_batch_size",
            "Images per ONNX Runtime call",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_latency = Histogram(
            "skindx_inference_batch_duration_seconds",
            "Time of one batched inference call",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "skindx_inference_queue_depth",
            "Images waiting for inference",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.model_info = Gauge(
            "skindx_model_info",
            "The served model (value 1), per worker process (pid) with several workers",
            ["version"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.reloads = Counter(
            "skindx_model_reloads_total",
            "Model reload attempts by result",
            ["result"],
            registry=r,
        )

        # the prediction log: every answered image ends in exactly one of written, dropped, failed
        self.log_written = Counter(
            "skindx_prediction_log_written_total",
            "Prediction records written to the prediction log database",
            registry=r,
        )
        self.log_dropped = Counter(
            "skindx_prediction_log_dropped_total",
            "Prediction records dropped because the log's queue was full (never blocked on)",
            registry=r,
        )
        self.log_failed = Counter(
            "skindx_prediction_log_failed_total",
            "Prediction records lost because their database write failed",
            registry=r,
        )
        self.log_write_errors = Counter(
            "skindx_prediction_log_write_errors_total",
            "Failed prediction-log database transactions (each loses its records)",
            registry=r,
        )
        self.log_queue_depth = Gauge(
            "skindx_prediction_log_queue_depth",
            "Prediction records waiting to be written",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.feedback = Counter(
            "skindx_feedback_total",
            "Confirmed diagnoses recorded by POST /feedback, by whether they agree",
            ["agrees"],
            registry=r,
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)

    def set_model(self, version: str) -> None:
        # 0 for the versions served before (clear() would not reach the multiprocess files)
        for old in self._versions - {version}:
            self.model_info.labels(version=old).set(0)
        self._versions.add(version)
        self.model_info.labels(version=version).set(1)

    def exposition(self) -> bytes:
        """The text format of this app's metrics, or of all workers' in multiprocess mode."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)
        combined.register(self.drift)
        return generate_latest(combined)

    def close(self) -> None:
        """A worker that stops takes its live gauges (in flight, queue, model) with it."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())


class MetricsMiddleware:
    """Counts and times every HTTP request, labelled by its route template (bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "other"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)
