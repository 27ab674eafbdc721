"""POST /predict (one image) and POST /predict/batch (several, each with its own result)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from serving.deps import (
    DecodeLimiterDep,
    EngineDep,
    MetricsDep,
    ModelDep,
    PredictionLogDep,
    RequestIdDep,
    SettingsDep,
    TtaDep,
)
from serving.errors import ApiError
from serving.responses import answer
from serving.schemas import BatchItem, BatchPrediction, Prediction
from serving.uploads import UPLOAD_ERRORS, decode, elapsed_ms, infer, read_upload, refusal
from skindx.inference.images import ImageDecodeError

router = APIRouter(tags=["inference"])

ImageFile = Annotated[UploadFile, File(description="A JPEG, PNG or WebP dermatoscopic image.")]
ImageFiles = Annotated[list[UploadFile], File(description="JPEG, PNG or WebP images.")]


@router.post(
    "/predict", response_model=Prediction, responses=UPLOAD_ERRORS, summary="Classify one image"
)
async def predict(
    file: ImageFile,
    settings: SettingsDep,
    engine: EngineDep,
    limiter: DecodeLimiterDep,
    log: PredictionLogDep,
    request_id: RequestIdDep,
    tta: TtaDep,
    _model: ModelDep,  # 503 before reading the upload when no model is served
) -> Prediction:
    started = time.perf_counter()
    upload = await decode(await read_upload(file, settings), settings, engine, limiter, tta=tta)
    (result,) = await infer([upload.item], settings, engine)
    return answer(
        log,
        result,
        upload.facts,
        started,
        request_id=request_id,
        endpoint="predict",
        ood_action=settings.ood_action,
    )


def _nothing_to_classify(refusals: list[BatchItem]) -> ApiError:
    statuses = {r.status_code for r in refusals}
    codes = {r.error.code for r in refusals if r.error}
    reasons = "; ".join(f"{r.filename!r}: {r.error.detail}" for r in refusals if r.error)
    return ApiError(
        statuses.pop() if len(statuses) == 1 else 422,
        codes.pop() if len(codes) == 1 else "no_valid_files",
        f"none of the {len(refusals)} files could be classified: {reasons}",
    )


@router.post(
    "/predict/batch",
    response_model=BatchPrediction,
    responses=UPLOAD_ERRORS,
    summary="Classify several images (at most SKINDX_MAX_BATCH_FILES, 16 by default)",
    description="Each file gets its own result: a refused file carries its error and "
    "status while the others are still classified. When no file can be classified the "
    "whole request fails with their common status (or 422) and every file's reason. More "
    "files than the server's limit: 413 `too_many_files`, which names the limit.",
)
async def predict_batch(
    files: ImageFiles,
    settings: SettingsDep,
    engine: EngineDep,
    metrics: MetricsDep,
    limiter: DecodeLimiterDep,
    log: PredictionLogDep,
    request_id: RequestIdDep,
    tta: TtaDep,
    _model: ModelDep,
) -> BatchPrediction:
    started = time.perf_counter()
    if len(files) > settings.max_batch_files:
        raise ApiError(
            413,
            "too_many_files",
            f"{len(files)} files sent; a batch takes at most {settings.max_batch_files}",
        )

    async def decode_or_refuse(upload: UploadFile):
        try:
            data = await read_upload(upload, settings)
            return await decode(data, settings, engine, limiter, tta=tta)
        except (ApiError, ImageDecodeError) as exc:
            metrics.rejections.labels(code=exc.code).inc()
            return refusal(upload, exc)

    outcomes = await asyncio.gather(*(decode_or_refuse(f) for f in files))
    refusals = [o for o in outcomes if isinstance(o, BatchItem)]
    if len(refusals) == len(files):
        raise _nothing_to_classify(refusals)
    accepted = [o for o in outcomes if not isinstance(o, BatchItem)]
    inferred = iter(await infer([a.item for a in accepted], settings, engine))
    results = []
    for index, (upload, outcome) in enumerate(zip(files, outcomes, strict=True)):
        if isinstance(outcome, BatchItem):
            results.append(outcome)
            continue
        try:
            prediction = answer(
                log,
                next(inferred),
                outcome.facts,
                started,
                request_id=f"{request_id}-{index}",
                http_request_id=request_id,
                endpoint="batch",
                batch_index=index,
                ood_action=settings.ood_action,
                filename=upload.filename,
            )
        except ApiError as exc:  # not_dermoscopic (SKINDX_OOD_ACTION=reject): this file only
            metrics.rejections.labels(code=exc.code).inc()
            results.append(refusal(upload, exc))
            continue
        results.append(BatchItem(filename=upload.filename, status_code=200, prediction=prediction))
    if not any(r.prediction for r in results):
        raise _nothing_to_classify(results)
    version = next(r.prediction.model_version for r in results if r.prediction)
    return BatchPrediction(
        results=results,
        model_version=version,
        processing_time_ms=elapsed_ms(started),
        request_id=request_id,
    )
