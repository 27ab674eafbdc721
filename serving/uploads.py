"""From an uploaded file to a model answer, shared by /predict, /predict/batch and /explain.

Uploads arrive size-capped (BodyLimitMiddleware); here each file is checked against the per-file
limit, sniffed and decoded in a bounded thread pool, then queued for batched inference.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from fastapi import UploadFile

from serving.batcher import BatcherClosedError, QueueFullError
from serving.engine import InferenceEngine, InferenceItem, InferenceResult, ModelNotReadyError
from serving.errors import ApiError
from serving.schemas import BatchItem, ErrorBody
from serving.settings import MB, Settings
from skindx.inference.images import ImageDecodeError, decode_image

_ERROR_TEXT = {
    400: "Malformed multipart body.",
    401: "Missing bearer token.",
    403: "Wrong bearer token.",
    409: "The new model was refused; the old one keeps serving.",
    413: "Upload, image or batch too large.",
    415: "Not a JPEG, PNG or WebP image.",
    422: "Empty, corrupt, too small or missing upload.",
    503: "No model loaded yet, or the inference queue is full (see Retry-After).",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the JSON error body."""
    return {s: {"model": ErrorBody, "description": _ERROR_TEXT[s]} for s in statuses}


UPLOAD_ERRORS = error_responses(400, 413, 415, 422, 503)


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


async def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    # BodyLimitMiddleware already stopped oversized requests while streaming; this catches one
    # oversized file within a batch (whose request cap is files x the file limit).
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise ApiError(
            413,
            "file_too_large",
            f"file {upload.filename!r} is over the limit of {settings.max_upload_bytes / MB:g} MB",
        )
    return data


async def decode(
    data: bytes, settings: Settings, engine: InferenceEngine, limiter: anyio.CapacityLimiter
) -> InferenceItem:
    """Sniff, decode and resize off the event loop, a bounded number at a time."""

    def work() -> InferenceItem:
        decoded = decode_image(
            data, max_pixels=settings.max_image_pixels, min_side=settings.min_image_side
        )
        return engine.prepare(decoded.image)

    return await anyio.to_thread.run_sync(work, limiter=limiter)


async def infer(
    items: list[InferenceItem], settings: Settings, engine: InferenceEngine
) -> list[InferenceResult]:
    """Queue the items for batched inference: 503 queue_full or not_ready when it cannot."""
    try:
        return await engine.infer_many(items)
    except QueueFullError as exc:
        raise ApiError(
            503,
            "queue_full",
            f"the server is busy: {exc}; retry after {settings.retry_after_s}s",
            {"Retry-After": str(settings.retry_after_s)},
        ) from exc
    except (ModelNotReadyError, BatcherClosedError) as exc:
        raise ApiError.not_ready(exc, settings.retry_after_s) from exc


def refusal(upload: UploadFile, exc: ApiError | ImageDecodeError) -> BatchItem:
    """One refused file of a batch, as its batch result."""
    error = ErrorBody(detail=exc.detail, code=exc.code)
    return BatchItem(filename=upload.filename, status_code=exc.status_code, error=error)
