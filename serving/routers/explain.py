"""POST /explain: the prediction plus a Grad-CAM overlay of where the model looked."""

from __future__ import annotations

import time
from typing import Annotated

import anyio
from fastapi import APIRouter, Query

from serving.deps import (
    DecodeLimiterDep,
    EngineDep,
    ModelDep,
    PredictionLogDep,
    RequestIdDep,
    SettingsDep,
    TtaDep,
)
from serving.responses import answer, build_prediction, explanation_png
from serving.routers.predict import ImageFile
from serving.schemas import ClassCode, Explanation
from serving.uploads import UPLOAD_ERRORS, decode, infer, read_upload

router = APIRouter(tags=["inference"])


@router.post(
    "/explain",
    response_model=Explanation,
    responses=UPLOAD_ERRORS,
    summary="Classify one image and show where the model looked (Grad-CAM overlay PNG)",
)
async def explain(
    file: ImageFile,
    settings: SettingsDep,
    engine: EngineDep,
    limiter: DecodeLimiterDep,
    log: PredictionLogDep,
    request_id: RequestIdDep,
    tta: TtaDep,
    _model: ModelDep,
    target: Annotated[
        ClassCode | None,
        Query(description="Class to explain; the predicted class when omitted."),
    ] = None,
) -> Explanation:
    started = time.perf_counter()
    data = await read_upload(file, settings)
    upload = await decode(data, settings, engine, limiter, view_side=settings.explain_size, tta=tta)
    (result,) = await infer([upload.item], settings, engine)
    explained = target or build_prediction(result, 0.0).predicted_class
    png = await anyio.to_thread.run_sync(
        explanation_png,
        upload.item,
        result,
        explained,
        settings.explain_size,
        limiter=limiter,
    )
    prediction = answer(
        log,
        result,
        upload.facts,
        started,
        request_id=request_id,
        endpoint="explain",
        ood_action=settings.ood_action,
    )
    return Explanation(
        **prediction.model_dump(),
        explained_class=explained,
        heatmap_png_base64=png.png_base64,
        cam_layer=png.layer,
        cam_grid=list(png.grid),
    )
