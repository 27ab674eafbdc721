"""From an uploaded file to a model answer, shared by /predict, /predict/batch and /explain.

Uploads arrive size-capped (BodyLimitMiddleware); here each file is checked against the per-file
limit, sniffed and decoded in a bounded thread pool, then queued for batched inference.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import UploadFile

from serving.batcher import BatcherClosedError, QueueFullError
from serving.engine import InferenceEngine, InferenceItem, InferenceResult, ModelNotReadyError
from serving.errors import ApiError
from serving.schemas import BatchItem, ErrorBody
from serving.settings import MB, Settings
from skindx.inference.image_stats import image_stats
from skindx.inference.images import ImageDecodeError, decode_image, full_view

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


def error_responses(
    *statuses: int, texts: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the JSON error body (`texts`
    replaces the default description of a status)."""
    texts = {**_ERROR_TEXT, **(texts or {})}
    return {s: {"model": ErrorBody, "description": texts[s]} for s in statuses}


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


@dataclass(frozen=True)
class UploadFacts:
    """What the prediction log keeps of an upload (None of it when the log is off)."""

    image_format: str  # JPEG | PNG | WEBP, from the bytes
    width: int  # as stored, before EXIF orientation
    height: int
    nbytes: int
    sha256: str
    stats: dict[str, float]  # skindx.inference.image_stats of the model's input pixels
    data: bytes | None  # the upload itself, only with SKINDX_STORE_UPLOADS


@dataclass(frozen=True)
class DecodedUpload:
    item: InferenceItem
    facts: UploadFacts | None


async def decode(
    data: bytes,
    settings: Settings,
    engine: InferenceEngine,
    limiter: anyio.CapacityLimiter,
    view_side: int | None = None,
    tta: bool = False,
) -> DecodedUpload:
    """Sniff, decode and resize off the event loop, a bounded number at a time; with the
    prediction log on, the hash and drift statistics are taken in the same thread.

    The upload is decoded as the model's contract says (a JPEG draft decode with
    `jpeg_draft`). `view_side`: the overlay's side (/explain); when the draft decode is smaller
    than that, the upload is decoded a second time, in full, for the overlay's background only.
    `tta`: the item is answered with the mean over its 8 dihedral views."""
    limits = {"max_pixels": settings.max_image_pixels, "min_side": settings.min_image_side}

    def work() -> DecodedUpload:
        contract = engine.model.contract  # read once: decode and resize under the same one
        decoded = decode_image(data, contract=contract, **limits)
        view = None if view_side is None else full_view(decoded, data, view_side, **limits)
        item = engine.prepare(decoded.image, contract, view, tta=tta)
        if not settings.prediction_log:
            return DecodedUpload(item, None)
        width, height = decoded.source_size
        facts = UploadFacts(
            image_format=decoded.source_format,
            width=width,
            height=height,
            nbytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            stats=image_stats(item.pixels),
            data=data if settings.store_uploads else None,
        )
        return DecodedUpload(item, facts)

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
