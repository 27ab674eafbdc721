"""POST /admin/reload: verify and swap in the model in the model directory (bearer token)."""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import AdminDep, EngineDep
from serving.engine import ModelRejectedError
from serving.errors import ApiError
from serving.schemas import ReloadResult
from serving.uploads import error_responses

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/reload",
    response_model=ReloadResult,
    responses=error_responses(401, 403, 409),
    summary="Load, verify and swap in the model in the model directory",
    description="Needs `Authorization: Bearer $SKINDX_ADMIN_TOKEN`; disabled (404) when "
    "the variable is unset. In-flight requests finish on the old model; a tampered or "
    "broken model is refused (409) and the old one keeps serving.",
)
async def reload_model(_admin: AdminDep, engine: EngineDep) -> ReloadResult:
    try:
        previous, version = await engine.load()
    except ModelRejectedError as exc:
        still = f"model {engine.model.version} keeps serving" if engine.ready else "no model"
        raise ApiError(
            409, "model_rejected", f"the new model was refused ({still}): {exc}"
        ) from exc
    return ReloadResult(previous_version=previous, model_version=version)
