"""Request dependencies, as `Annotated[..., Depends(...)]` types the routers declare.

Everything a route needs lives on `app.state` (one app, one engine, one set of metrics), so tests
can build several apps side by side; these dependencies are the only readers of it.
"""

from __future__ import annotations

import hmac
from typing import Annotated

import anyio
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.engine import InferenceEngine, ModelNotReadyError
from serving.errors import ApiError
from serving.metrics import ServingMetrics
from serving.predlog.writer import PredictionLog
from serving.request_id import request_id_of
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


def get_prediction_log(request: Request) -> PredictionLog | None:
    """The prediction log's writer, or None with SKINDX_PREDICTION_LOG off."""
    return request.app.state.prediction_log


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[InferenceEngine, Depends(get_engine)]
MetricsDep = Annotated[ServingMetrics, Depends(get_metrics)]
DecodeLimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_decode_limiter)]
PredictionLogDep = Annotated[PredictionLog | None, Depends(get_prediction_log)]
RequestIdDep = Annotated[str, Depends(request_id_of)]


def get_model(engine: EngineDep, settings: SettingsDep) -> PackagedModel:
    """The served model, or 503 not_ready (with Retry-After) while there is none."""
    try:
        return engine.model
    except ModelNotReadyError as exc:
        raise ApiError.not_ready(exc, settings.retry_after_s) from exc


ModelDep = Annotated[PackagedModel, Depends(get_model)]


def tta_choice(
    settings: SettingsDep,
    tta: Annotated[
        bool | None,
        Query(
            description="Average the diagnosis over the image's 8 dihedral views (test-time "
            "augmentation): a little more accurate, several times the inference time. "
            "Omitted: the server's default, SKINDX_TTA (GET /model says which)."
        ),
    ] = None,
) -> bool:
    """This request's test-time augmentation: its `?tta=` when given, else the server's."""
    return settings.tta if tta is None else tta


TtaDep = Annotated[bool, Depends(tta_choice)]

admin_bearer = HTTPBearer(auto_error=False, description="The value of SKINDX_ADMIN_TOKEN.")
reviewer_bearer = HTTPBearer(
    auto_error=False, scheme_name="reviewer", description="The value of SKINDX_REVIEWER_TOKEN."
)


def check_bearer(
    token: str | None, credentials: HTTPAuthorizationCredentials | None, what: str, variable: str
) -> None:
    """404 while the token setting is unset (the API does not exist), 401 without a bearer
    token, 403 with a wrong one (compared in constant time)."""
    if not token:
        raise ApiError(404, "not_found", f"the {what} API is disabled: {variable} is unset")
    if credentials is None:
        raise ApiError(
            401,
            "unauthorized",
            f"send the {what} token as `Authorization: Bearer <token>`",
            {"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise ApiError(403, "forbidden", f"wrong {what} token")


def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> None:
    check_bearer(settings.admin_token_value, credentials, "admin", "SKINDX_ADMIN_TOKEN")


def require_reviewer(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(reviewer_bearer)],
) -> None:
    check_bearer(settings.reviewer_token_value, credentials, "feedback", "SKINDX_REVIEWER_TOKEN")


AdminDep = Annotated[None, Depends(require_admin)]
ReviewerDep = Annotated[None, Depends(require_reviewer)]
