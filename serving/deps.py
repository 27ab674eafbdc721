"""Request dependencies, as `Annotated[..., Depends(...)]` types the routers declare.

Everything a route needs lives on `app.state` (one app, one engine, one set of metrics), so tests
can build several apps side by side; these dependencies are the only readers of it.
"""

from __future__ import annotations

import hmac
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.engine import InferenceEngine, ModelNotReadyError
from serving.errors import ApiError
from serving.metrics import ServingMetrics
from serving.settings import Settings
from skindx.inference.model import PackagedModel


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> InferenceEngine:
    return request.app.state.engine


def get_metrics(request: Request) -> ServingMetrics:
    return request.app.state.metrics


def get_decode_limiter(request: Request) -> anyio.CapacityLimiter:
    """Bounds the threads that sniff, decode and resize uploads (SKINDX_DECODE_THREADS)."""
    return request.app.state.decode_limiter


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[InferenceEngine, Depends(get_engine)]
MetricsDep = Annotated[ServingMetrics, Depends(get_metrics)]
DecodeLimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_decode_limiter)]


def get_model(engine: EngineDep, settings: SettingsDep) -> PackagedModel:
    """The served model, or 503 not_ready (with Retry-After) while there is none."""
    try:
        return engine.model
    except ModelNotReadyError as exc:
        raise ApiError.not_ready(exc, settings.retry_after_s) from exc


ModelDep = Annotated[PackagedModel, Depends(get_model)]

admin_bearer = HTTPBearer(auto_error=False, description="The value of SKINDX_ADMIN_TOKEN.")


def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> None:
    """404 while SKINDX_ADMIN_TOKEN is unset (the admin API does not exist), 401 without a
    bearer token, 403 with a wrong one (compared in constant time)."""
    token = settings.admin_token_value
    if not token:
        raise ApiError(404, "not_found", "the admin API is disabled: SKINDX_ADMIN_TOKEN is unset")
    if credentials is None:
        raise ApiError(
            401,
            "unauthorized",
            "send the admin token as `Authorization: Bearer <token>`",
            {"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise ApiError(403, "forbidden", "wrong admin token")


AdminDep = Annotated[None, Depends(require_admin)]
