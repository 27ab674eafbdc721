"""Response bodies of the serving API (they are its OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.settings import OodAction
from skindx.inference.classes import CLASS_CODES

ClassCode = Literal[CLASS_CODES]  # type: ignore[valid-type]
RiskGroup = Literal["malignant", "pre-cancerous", "benign"]
Urgency = Literal["critical", "high", "medium", "low"]


class ErrorBody(BaseModel):
    detail: str = Field(description="What was wrong, in words.")
    code: str = Field(
        description="A stable machine-readable error code.", examples=["corrupt_image"]
    )


class ClassProbability(BaseModel):
    code: ClassCode
    name: str
    probability: float = Field(ge=0.0, le=1.0)


class Prediction(BaseModel):
    predicted_class: ClassCode = Field(description="Diagnostic class code (HAM10000 `dx`).")
    predicted_name: str = Field(description="Human-readable name of the predicted class.")
    confidence: float = Field(
        ge=0.0, le=1.0, description="Probability of the predicted class, temperature-calibrated."
    )
    risk_group: RiskGroup
    urgency: Urgency = Field(description="mel critical, bcc high, akiec medium, the rest low.")
    uncertain: bool = Field(
        False,
        description="True when `confidence` is below the card's uncertainty threshold (chosen "
        "on validation): show 'uncertain: see a dermatologist', not the diagnosis.",
    )
    uncertainty_threshold: float | None = Field(
        None,
        description="The card's threshold for this kind of answer: its TTA one when `tta` "
        "and the card has one (evaluate.tta), else the plain one; null: the package has none.",
    )
    ood_score: float | None = Field(
        None,
        description="Out-of-distribution score of the upload (skindx.inference.ood: higher = "
        "less like the dermatoscopic training images); null when the package has no scorer.",
    )
    in_distribution: bool | None = Field(
        None,
        description="False when `ood_score` is above the card's threshold (set so that 95 % of "
        "validation images pass): the upload does not look like a dermatoscopic image of a "
        "lesion, so show a warning instead of the diagnosis. With SKINDX_OOD_ACTION=reject such "
        "uploads get a 422 `not_dermoscopic` instead. Null: the package has no scorer.",
    )
    ood_threshold: float | None = Field(
        None, description="The card's out-of-distribution threshold (null: no scorer)."
    )
    probabilities: list[ClassProbability] = Field(description="Every class, in label order.")
    tta: bool = Field(
        False,
        description="True when the probabilities are the mean over the image's 8 dihedral "
        "views (test-time augmentation: the request's `?tta=`, else SKINDX_TTA).",
    )
    model_version: str
    processing_time_ms: float = Field(ge=0.0)
    request_id: str | None = Field(
        None,
        description="This prediction's id in the prediction log, for POST /feedback: the "
        "request's X-Request-ID, or `<X-Request-ID>-<index>` for a file of a batch.",
    )
    logged: bool = Field(
        False, description="Whether it was queued for the prediction log (SKINDX_PREDICTION_LOG)."
    )
    image_stored: bool = Field(
        False,
        description="Whether the server keeps a copy of the image (SKINDX_STORE_UPLOADS; off "
        "by default, then only its hash and statistics are logged).",
    )


class Explanation(Prediction):
    explained_class: ClassCode = Field(description="The class the heatmap explains.")
    heatmap_png_base64: str = Field(
        description="PNG (base64) of the Grad-CAM heatmap over the model's view of the image."
    )
    heatmap_media_type: Literal["image/png"] = "image/png"
    cam_layer: Literal["layer3", "layer4"] = Field(
        "layer4",
        description="The feature map the Grad-CAM comes from: layer4, or layer3 when layer4 is "
        "too coarse at the served resolution (e.g. 2x2 at 64 px; the card's cam section).",
    )
    cam_grid: list[int] = Field(
        default_factory=list, description="That map's height and width before upsampling."
    )


class BatchItem(BaseModel):
    filename: str | None
    prediction: Prediction | None = None
    error: ErrorBody | None = Field(
        default=None, description="Why this file was refused (the others still count)."
    )
    status_code: int = Field(description="The status this file alone would have had.")


class BatchPrediction(BaseModel):
    results: list[BatchItem]
    model_version: str
    processing_time_ms: float = Field(ge=0.0)
    request_id: str | None = Field(None, description="The request's X-Request-ID.")


class FeedbackIn(BaseModel):
    """A reviewer's confirmed diagnosis of one logged prediction."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=1, max_length=80, description="`request_id` of the prediction's response."
    )
    label: ClassCode = Field(description="The confirmed diagnosis (a HAM10000 class code).")
    reviewer: str | None = Field(None, max_length=128, description="Who confirmed it.")
    note: str | None = Field(None, max_length=2000)


class FeedbackOut(BaseModel):
    status: Literal["recorded"] = "recorded"
    request_id: str
    label: ClassCode
    predicted_class: ClassCode
    agrees: bool = Field(description="Whether the model had predicted the confirmed label.")
    model_version: str
    image_stored: bool = Field(
        description="Whether the image is kept, so that this case can join the next training."
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    model_version: str


class ClassDescription(BaseModel):
    code: ClassCode
    name: str
    risk_group: RiskGroup
    urgency: Urgency


class ServingDefaults(BaseModel):
    """How this server answers when a request does not say otherwise."""

    tta: bool = Field(
        description="Predictions average the 8 dihedral views unless the request sends "
        "`?tta=false` (SKINDX_TTA)."
    )
    ood_action: OodAction = Field(
        description="`flag` or `reject` for uploads out of distribution (SKINDX_OOD_ACTION)."
    )


class ModelCard(BaseModel):
    """The served model's card (model.json); unknown keys pass through."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str
    version: str
    created: str | None = None
    classes: list[ClassDescription]
    preprocessing: dict[str, Any]
    temperature: float | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    metric_labels: dict[str, str] = Field(
        default_factory=dict,
        description="The headline test metrics in display order, each with its label (how the "
        "UI shows `metrics`; the names are those of reports/metrics.json).",
    )
    lineage: dict[str, Any] = Field(default_factory=dict)
    card_sha256: str | None = Field(
        None,
        description="sha256 of model.json's canonical content, sealed at packaging and checked "
        "on load (compare it with the registry's card_sha256 tag); null for older packages.",
    )
    serving: ServingDefaults | None = Field(
        None, description="This server's defaults for the model (not part of model.json)."
    )


class ReloadResult(BaseModel):
    status: Literal["reloaded"] = "reloaded"
    previous_version: str | None
    model_version: str
