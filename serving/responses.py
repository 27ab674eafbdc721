"""Turn inference results into response bodies: predictions and Grad-CAM overlays."""

from __future__ import annotations

import base64
import dataclasses
import io

import numpy as np
from PIL import Image

from serving.engine import InferenceItem, InferenceResult
from serving.errors import ApiError
from serving.predlog.writer import PredictionLog
from serving.recording import NOT_LOGGED, Logged, record_prediction
from serving.schemas import ClassProbability, ModelCard, Prediction
from serving.settings import Settings
from serving.uploads import UploadFacts, elapsed_ms
from skindx.inference.cam import overlay
from skindx.inference.classes import CLASS_INFO
from skindx.inference.metrics import HEADLINE_METRICS, METRIC_LABELS
from skindx.inference.model import PackagedModel
from skindx.inference.preprocessing import crop_and_resize


def uncertainty_threshold(card: dict, tta: bool) -> float | None:
    """The card's threshold for this kind of answer: averaged probabilities are distributed
    differently, so a TTA answer is held to the threshold chosen on the validation views when
    the card has one (evaluate.tta), else to the plain one."""
    uncertainty = card.get("uncertainty") or {}
    if tta and (uncertainty.get("tta") or {}).get("threshold") is not None:
        return uncertainty["tta"]["threshold"]
    return uncertainty.get("threshold")


def build_prediction(
    result: InferenceResult,
    processing_time_ms: float,
    request_id: str | None = None,
    logged: Logged = NOT_LOGGED,
) -> Prediction:
    model = result.model
    probabilities = result.probabilities
    best = int(np.argmax(probabilities))
    info = CLASS_INFO[model.classes[best]]
    threshold = uncertainty_threshold(model.card, result.tta)
    ood_threshold = model.ood.threshold if model.ood is not None else None
    return Prediction(
        predicted_class=info.code,
        predicted_name=info.name,
        confidence=float(probabilities[best]),
        risk_group=info.risk_group,
        urgency=info.urgency,
        uncertain=threshold is not None and float(probabilities[best]) < threshold,
        uncertainty_threshold=threshold,
        ood_score=result.ood_score,
        in_distribution=result.in_distribution,
        ood_threshold=ood_threshold,
        probabilities=[
            ClassProbability(code=code, name=CLASS_INFO[code].name, probability=float(p))
            for code, p in zip(model.classes, probabilities, strict=True)
        ],
        tta=result.tta,
        model_version=model.version,
        processing_time_ms=processing_time_ms,
        request_id=request_id,
        logged=logged.logged,
        image_stored=logged.image_stored,
    )


@dataclasses.dataclass(frozen=True)
class ExplanationImage:
    png_base64: str
    layer: str  # the feature map the Grad-CAM comes from (layer4, or layer3 when too coarse)
    grid: tuple[int, int]  # its spatial size


def explanation_png(
    item: InferenceItem, result: InferenceResult, class_code: str, size: int
) -> ExplanationImage:
    """Base64 PNG: the Grad-CAM of `class_code` over the region the model saw, `size` px
    square, on the package's CAM layer (PackagedModel.explain). The CAM is of the pixels the
    model classified (item.pixels_for); the background is the kept upload in its own colours."""
    model = result.model
    index = model.classes.index(class_code)
    if model.cam_session is None:  # layer4: the features are already in the result
        cam = model.cam(result.features, index, size=(size, size))
        layer, grid = "layer4", tuple(result.features.shape[1:])
    else:
        pixels = item.pixels_for(model.contract)
        cam, layer, grid = model.explain(pixels, index, size=(size, size))
    view_contract = dataclasses.replace(model.contract, input_size=size)
    view = crop_and_resize(item.image, view_contract)  # the model's crop, larger, own colours
    buffer = io.BytesIO()
    Image.fromarray(overlay(view, cam)).save(buffer, format="PNG", optimize=False)
    return ExplanationImage(base64.b64encode(buffer.getvalue()).decode("ascii"), layer, grid)


def model_card(model: PackagedModel, settings: Settings) -> ModelCard:
    """The card as GET /model shows it, with this server's defaults beside it."""
    card = dict(model.card)
    card["serving"] = {"tta": settings.tta, "ood_action": settings.ood_action}
    card["version"] = model.version  # the card may hold a registry version number
    # names and risk groups as the predictions report them
    card["classes"] = [CLASS_INFO[code].to_dict() for code in model.classes]
    card["metric_labels"] = {name: METRIC_LABELS[name] for name in HEADLINE_METRICS}
    return ModelCard.model_validate(card)


def answer(
    log: PredictionLog | None,
    result: InferenceResult,
    facts: UploadFacts | None,
    started: float,
    *,
    request_id: str,
    endpoint: str,
    http_request_id: str | None = None,
    batch_index: int | None = None,
    ood_action: str = "flag",
    filename: str | None = None,
) -> Prediction:
    """An answered image's latency, its one prediction-log record and its response body: the
    same steps for /predict, each file of /predict/batch and /explain.

    With `ood_action="reject"` an upload out of distribution raises ApiError 422
    not_dermoscopic instead (after its record is logged, with its ood_score, for monitoring)."""
    latency = elapsed_ms(started)
    logged = record_prediction(
        log,
        request_id=request_id,
        http_request_id=http_request_id or request_id,
        endpoint=endpoint,
        batch_index=batch_index,
        result=result,
        facts=facts,
        latency_ms=latency,
    )
    if ood_action == "reject" and result.in_distribution is False:
        raise ApiError.not_dermoscopic(
            float(result.ood_score), float(result.model.ood.threshold), filename
        )
    return build_prediction(result, latency, request_id, logged)
