"""GET /metrics: the Prometheus exposition (private: nginx does not route it)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from serving.deps import MetricsDep

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
async def metrics(served: MetricsDep) -> PlainTextResponse:
    return PlainTextResponse(served.exposition(), media_type=CONTENT_TYPE_LATEST)
