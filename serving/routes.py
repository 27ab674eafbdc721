"""The HTTP endpoints. Uploads arrive size-capped (BodyLimitMiddleware), are sniffed and decoded
in a bounded thread pool, then queued for batched inference."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from serving.batcher import BatcherClosedError, QueueFullError
from serving.engine import (
    InferenceEngine,
    InferenceItem,
    InferenceResult,
    ModelNotReadyError,
    ModelRejectedError,
)
from serving.errors import ApiError
from serving.responses import build_prediction, explanation_png, model_card
from serving.schemas import (
    BatchItem,
    BatchPrediction,
    ClassCode,
    ErrorBody,
    Explanation,
    Health,
    ModelCard,
    Prediction,
    Readiness,
    ReloadResult,
)
from serving.settings import MB, Settings
from skindx.inference.images import ImageDecodeError, decode_image
from skindx.inference.model import PackagedModel


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed multipart body.",
        401: "Missing bearer token.",
        403: "Wrong bearer token.",
        409: "The new model was refused; the old one keeps serving.",
        413: "Upload, image or batch too large.",
        415: "Not a JPEG, PNG or WebP image.",
        422: "Empty, corrupt, too small or missing upload.",
        503: "No model loaded yet, or the inference queue is full (see Retry-After).",
    }
    return {s: {"model": ErrorBody, "description": text[s]} for s in statuses}


UPLOAD_ERRORS = _errors(400, 413, 415, 422, 503)
ImageFile = Annotated[UploadFile, File(description="A JPEG, PNG or WebP dermatoscopic image.")]


admin_bearer = HTTPBearer(auto_error=False, description="The value of SKINDX_ADMIN_TOKEN.")


def _engine(request: Request) -> InferenceEngine:
    return request.app.state.engine


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _not_ready(exc: Exception, settings: Settings) -> ApiError:
    return ApiError(503, "not_ready", str(exc), {"Retry-After": str(settings.retry_after_s)})


async def _read_upload(upload: UploadFile, settings: Settings) -> bytes:
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


async def _decode(request: Request, data: bytes) -> InferenceItem:
    """Sniff, decode and resize off the event loop, a bounded number at a time."""
    settings, engine = _settings(request), _engine(request)

    def work() -> InferenceItem:
        decoded = decode_image(
            data, max_pixels=settings.max_image_pixels, min_side=settings.min_image_side
        )
        return engine.prepare(decoded.image)

    return await anyio.to_thread.run_sync(work, limiter=request.app.state.decode_limiter)


async def _infer(request: Request, items: list[InferenceItem]) -> list[InferenceResult]:
    settings = _settings(request)
    try:
        return await _engine(request).infer_many(items)
    except QueueFullError as exc:
        raise ApiError(
            503,
            "queue_full",
            f"the server is busy: {exc}; retry after {settings.retry_after_s}s",
            {"Retry-After": str(settings.retry_after_s)},
        ) from exc
    except (ModelNotReadyError, BatcherClosedError) as exc:
        raise _not_ready(exc, settings) from exc


def _require_model(request: Request) -> PackagedModel:
    try:
        return _engine(request).model
    except ModelNotReadyError as exc:
        raise _not_ready(exc, _settings(request)) from exc


async def _decode_or_refuse(request: Request, upload: UploadFile) -> InferenceItem | BatchItem:
    """One file of a batch: its model input, or its refusal as a batch result."""
    try:
        return await _decode(request, await _read_upload(upload, _settings(request)))
    except (ApiError, ImageDecodeError) as exc:
        request.app.state.metrics.rejections.labels(code=exc.code).inc()
        error = ErrorBody(detail=exc.detail, code=exc.code)
        return BatchItem(filename=upload.filename, status_code=exc.status_code, error=error)


def _nothing_to_classify(refusals: list[BatchItem]) -> ApiError:
    statuses = {r.status_code for r in refusals}
    codes = {r.error.code for r in refusals if r.error}
    reasons = "; ".join(f"{r.filename!r}: {r.error.detail}" for r in refusals if r.error)
    return ApiError(
        statuses.pop() if len(statuses) == 1 else 422,
        codes.pop() if len(codes) == 1 else "no_valid_files",
        f"none of the {len(refusals)} files could be classified: {reasons}",
    )


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter()

    @router.get("/health", response_model=Health, tags=["service"], summary="Liveness")
    async def health() -> Health:
        return Health()

    @router.get(
        "/ready",
        response_model=Readiness,
        tags=["service"],
        responses=_errors(503),
        summary="Readiness: 200 once a verified model is loaded and warmed up",
    )
    async def ready(request: Request) -> Readiness:
        return Readiness(model_version=_require_model(request).version)

    @router.get(
        "/model",
        response_model=ModelCard,
        tags=["model"],
        responses=_errors(503),
        summary="The served model's card: version, metrics, lineage, classes",
    )
    async def model(request: Request) -> ModelCard:
        return model_card(_require_model(request))

    @router.post(
        "/predict",
        response_model=Prediction,
        tags=["inference"],
        responses=UPLOAD_ERRORS,
        summary="Classify one image",
    )
    async def predict(request: Request, file: ImageFile) -> Prediction:
        started = time.perf_counter()
        _require_model(request)
        item = await _decode(request, await _read_upload(file, settings))
        (result,) = await _infer(request, [item])
        return build_prediction(result, _elapsed_ms(started))

    @router.post(
        "/predict/batch",
        response_model=BatchPrediction,
        tags=["inference"],
        responses=UPLOAD_ERRORS,
        summary=f"Classify up to {settings.max_batch_files} images",
        description="Each file gets its own result: a refused file carries its error and "
        "status while the others are still classified. When no file can be classified the "
        "whole request fails with their common status (or 422) and every file's reason.",
    )
    async def predict_batch(
        request: Request,
        files: Annotated[list[UploadFile], File(description="JPEG, PNG or WebP images.")],
    ) -> BatchPrediction:
        started = time.perf_counter()
        if len(files) > settings.max_batch_files:
            raise ApiError(
                413,
                "too_many_files",
                f"{len(files)} files sent; a batch takes at most {settings.max_batch_files}",
            )
        _require_model(request)
        outcomes = await asyncio.gather(*(_decode_or_refuse(request, f) for f in files))
        refusals = [o for o in outcomes if isinstance(o, BatchItem)]
        if len(refusals) == len(files):
            raise _nothing_to_classify(refusals)
        accepted = [o for o in outcomes if not isinstance(o, BatchItem)]
        inferred = iter(await _infer(request, accepted))
        results = [
            outcome
            if isinstance(outcome, BatchItem)
            else BatchItem(
                filename=upload.filename,
                status_code=200,
                prediction=build_prediction(next(inferred), _elapsed_ms(started)),
            )
            for upload, outcome in zip(files, outcomes, strict=True)
        ]
        version = next(r.prediction.model_version for r in results if r.prediction)
        return BatchPrediction(
            results=results, model_version=version, processing_time_ms=_elapsed_ms(started)
        )

    @router.post(
        "/explain",
        response_model=Explanation,
        tags=["inference"],
        responses=UPLOAD_ERRORS,
        summary="Classify one image and show where the model looked (Grad-CAM overlay PNG)",
    )
    async def explain(
        request: Request,
        file: ImageFile,
        target: Annotated[
            ClassCode | None,
            Query(description="Class to explain; the predicted class when omitted."),
        ] = None,
    ) -> Explanation:
        started = time.perf_counter()
        _require_model(request)
        item = await _decode(request, await _read_upload(file, settings))
        (result,) = await _infer(request, [item])
        prediction = build_prediction(result, 0.0)
        explained = target or prediction.predicted_class
        png = await anyio.to_thread.run_sync(
            explanation_png,
            item.image,
            result,
            explained,
            settings.explain_size,
            limiter=request.app.state.decode_limiter,
        )
        return Explanation(
            **prediction.model_dump(exclude={"processing_time_ms"}),
            processing_time_ms=_elapsed_ms(started),
            explained_class=explained,
            heatmap_png_base64=png,
        )

    @router.post(
        "/admin/reload",
        response_model=ReloadResult,
        tags=["admin"],
        responses=_errors(401, 403, 409),
        include_in_schema=bool(settings.admin_token),  # disabled: absent, like any unknown path
        summary="Load, verify and swap in the model in the model directory",
        description="Needs `Authorization: Bearer $SKINDX_ADMIN_TOKEN`; disabled (404) when "
        "the variable is unset. In-flight requests finish on the old model; a tampered or "
        "broken model is refused (409) and the old one keeps serving.",
    )
    async def reload_model(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
    ) -> ReloadResult:
        token = settings.admin_token
        if not token:
            raise ApiError(
                404, "not_found", "the admin API is disabled: SKINDX_ADMIN_TOKEN is unset"
            )
        if credentials is None:
            raise ApiError(
                401,
                "unauthorized",
                "send the admin token as `Authorization: Bearer <token>`",
                {"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise ApiError(403, "forbidden", "wrong admin token")
        try:
            previous, version = await _engine(request).load()
        except ModelRejectedError as exc:
            engine = _engine(request)
            still = f"model {engine.model.version} keeps serving" if engine.ready else "no model"
            raise ApiError(
                409, "model_rejected", f"the new model was refused ({still}): {exc}"
            ) from exc
        return ReloadResult(previous_version=previous, model_version=version)

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> PlainTextResponse:
        exposition = request.app.state.metrics.exposition()
        return PlainTextResponse(exposition, media_type=CONTENT_TYPE_LATEST)

    return router
