"""GET /health (liveness), /ready (a verified model is loaded) and /model (its card)."""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import ModelDep, SettingsDep
from serving.responses import model_card
from serving.schemas import Health, ModelCard, Readiness
from serving.uploads import error_responses

router = APIRouter()


@router.get("/health", response_model=Health, tags=["service"], summary="Liveness")
async def health() -> Health:
    return Health()


@router.get(
    "/ready",
    response_model=Readiness,
    tags=["service"],
    responses=error_responses(503),
    summary="Readiness: 200 once a verified model is loaded and warmed up",
)
async def ready(model: ModelDep) -> Readiness:
    return Readiness(model_version=model.version)


@router.get(
    "/model",
    response_model=ModelCard,
    tags=["model"],
    responses=error_responses(503),
    summary="The served model's card: version, metrics, lineage, classes",
)
async def model(served: ModelDep, settings: SettingsDep) -> ModelCard:
    return model_card(served, settings)
