"""Prometheus metrics of one app instance (its own registry, so apps in tests don't collide).
With several uvicorn workers each process keeps its own numbers; scrape each or run one."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
            "skindx_http_requests_in_flight", "HTTP requests being handled", registry=r
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
            "skindx_inference_queue_depth", "Images waiting for inference", registry=r
        )
        self.model_info = Gauge(
            "skindx_model_info", "The served model (value 1)", ["version"], registry=r
        )
        self.reloads = Counter(
            "skindx_model_reloads_total",
            "Model reload attempts by result",
            ["result"],
            registry=r,
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)

    def set_model(self, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version).set(1)


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
