"""POST /feedback: a reviewer's confirmed diagnosis of a logged prediction (bearer token).

A label is final: a second one for the same prediction is 409 with the first (no amending; a
wrong label is corrected in the database by an operator, which keeps an audit simple).
"""

from __future__ import annotations

import anyio
from fastapi import APIRouter
from sqlalchemy.exc import SQLAlchemyError

from serving.deps import MetricsDep, PredictionLogDep, ReviewerDep, SettingsDep
from serving.errors import ApiError
from serving.predlog.store import AlreadyLabelledError, UnknownPredictionError, add_feedback
from serving.predlog.writer import PredictionLog
from serving.schemas import FeedbackIn, FeedbackOut
from serving.uploads import error_responses

router = APIRouter(tags=["feedback"])

# a prediction answered a moment ago may still sit in the writer's queue
FLUSH_WAIT_S = 3.0


@router.post(
    "/feedback",
    response_model=FeedbackOut,
    status_code=201,
    responses=error_responses(
        400,
        401,
        403,
        404,
        409,
        422,
        503,
        texts={
            400: "The body is not JSON.",
            404: "Feedback is disabled (no SKINDX_REVIEWER_TOKEN), or no logged prediction "
            "has this request id.",
            409: "This prediction is labelled already.",
            422: "Not a valid body: e.g. a label that is not one of the seven class codes.",
            503: "The prediction log is off, or its database is unavailable.",
        },
    ),
    summary="Record the confirmed diagnosis of a prediction",
    description="Needs `Authorization: Bearer $SKINDX_REVIEWER_TOKEN`; disabled (404) when the "
    "variable is unset. `request_id` is the one a prediction's response carries. Unknown id: "
    "404; a prediction labelled already: 409 (labels are never overwritten); a label that is "
    "not one of the seven class codes: 422; the prediction log off or its database down: 503.",
)
async def post_feedback(
    body: FeedbackIn,
    _reviewer: ReviewerDep,
    log: PredictionLogDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> FeedbackOut:
    if log is None:
        raise ApiError(
            503,
            "prediction_log_off",
            "feedback needs the prediction log, which is off: set SKINDX_PREDICTION_LOG=true",
        )
    try:
        labelled = await anyio.to_thread.run_sync(_record, log, body)
    except UnknownPredictionError:
        raise ApiError(
            404,
            "unknown_request_id",
            f"no logged prediction has request id {body.request_id!r}: use the request_id of a "
            "prediction's response (predictions that were not logged cannot be labelled)",
        ) from None
    except AlreadyLabelledError as exc:
        raise ApiError(
            409,
            "already_labelled",
            f"{exc}; a label is final (ask an operator to correct a wrong one)",
        ) from None
    except SQLAlchemyError as exc:
        raise ApiError(
            503,
            "prediction_log_unavailable",
            f"the prediction log's database is unavailable ({type(exc).__name__}); retry later",
            {"Retry-After": str(settings.retry_after_s)},
        ) from None
    agrees = labelled.label == labelled.predicted_class
    metrics.feedback.labels(agrees=str(agrees).lower()).inc()
    return FeedbackOut(
        request_id=labelled.request_id,
        label=labelled.label,
        predicted_class=labelled.predicted_class,
        agrees=agrees,
        model_version=labelled.model_version,
        image_stored=labelled.image_stored,
    )


def _record(log: PredictionLog, body: FeedbackIn):
    try:
        return add_feedback(log.engine, body.request_id, body.label, body.reviewer, body.note)
    except UnknownPredictionError:
        if not log.flush(FLUSH_WAIT_S):  # perhaps still queued here: write it, look again
            raise
        return add_feedback(log.engine, body.request_id, body.label, body.reviewer, body.note)
