"""Every error leaves the API as JSON {"detail": str, "code": str}; never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from serving.settings import MB
from skindx.inference.images import ImageDecodeError

logger = logging.getLogger("serving")

NOT_DERMOSCOPIC = "not_dermoscopic"  # an upload the out-of-distribution scorer rejects

# codes for errors raised by the framework (routing, body limits, multipart parsing)
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An error with its HTTP status, stable code, message and optional headers."""

    def __init__(
        self, status_code: int, code: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})

    @classmethod
    def not_dermoscopic(
        cls, score: float, threshold: float, filename: str | None = None
    ) -> ApiError:
        """422 for an upload the out-of-distribution scorer rejects (SKINDX_OOD_ACTION=reject)."""
        name = f"{filename!r} " if filename else ""
        return cls(
            422,
            NOT_DERMOSCOPIC,
            f"the image {name}does not look like a dermatoscopic image of a skin lesion "
            f"(out-of-distribution score {score:.3g} above the model's threshold "
            f"{threshold:.3g}). Upload a dermatoscope photograph of one pigmented lesion, in "
            "colour and centred, not a screenshot, document, X-ray, everyday photo or "
            "clinical/smartphone picture.",
        )

    @classmethod
    def not_ready(cls, exc: Exception, retry_after_s: int) -> ApiError:
        """503 while no model is served (or the queue is shut): retry after a while."""
        return cls(503, "not_ready", str(exc), {"Retry-After": str(retry_after_s)})


def error_response(
    request: Request,
    status_code: int,
    code: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.rejections.labels(code=code).inc()
    return JSONResponse({"detail": detail, "code": code}, status_code=status_code, headers=headers)


def describe_validation_errors(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
        message = error.get("msg", "invalid value")
        if error.get("type") == "missing":
            message = "required but missing (send it as a multipart/form-data field)"
        parts.append(f"{location}: {message}")
    return "invalid request: " + "; ".join(parts) if parts else "invalid request"


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    if exc.status_code >= 500:
        logger.warning(
            "%s %s -> %d %s: %s",
            request.method,
            request.url.path,
            exc.status_code,
            exc.code,
            exc.detail,
        )
    return error_response(request, exc.status_code, exc.code, exc.detail, exc.headers)


async def _image_error(request: Request, exc: ImageDecodeError) -> JSONResponse:
    return error_response(request, exc.status_code, exc.code, exc.detail)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 413:  # BodyTooLargeError: the body passed the cap while streaming
        return body_too_large(request)
    return error_response(request, exc.status_code, code, detail, getattr(exc, "headers", None))


def body_too_large(request: Request) -> JSONResponse:
    limit_mb = request.app.state.settings.max_upload_bytes / MB
    detail = f"request body too large: uploads are limited to {limit_mb:g} MB per file"
    return error_response(request, 413, "request_too_large", detail, {"Connection": "close"})


async def reject_body_too_large(scope: Scope, receive: Receive, send: Send) -> None:
    """For BodyLimitMiddleware: answer a too-large declared Content-Length without reading."""
    await body_too_large(Request(scope, receive))(scope, receive, send)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(request, 422, "invalid_request", describe_validation_errors(exc))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(
        request, 500, "internal_error", "internal server error; it has been logged"
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ImageDecodeError, _image_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
