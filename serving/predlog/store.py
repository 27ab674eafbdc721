"""Reads and writes of POST /feedback (synchronous: the router runs them in a worker thread),
and the reviewed cases that ingest's feedback source (skindx.data.feedback) reads back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from serving.predlog.models import feedback, predictions


class UnknownPredictionError(LookupError):
    """No prediction with this request id is in the log."""


class AlreadyLabelledError(RuntimeError):
    """This prediction has a confirmed diagnosis already (labels are never overwritten)."""

    def __init__(self, request_id: str, label: str, created_at: datetime) -> None:
        super().__init__(f"request {request_id} was labelled {label!r} at {created_at}")
        self.label = label
        self.created_at = created_at


# what a reviewed case brings to ingest: the label and its provenance, and where the image is
REVIEWED_CASE_COLUMNS = (
    "request_id",
    "label",
    "reviewer",
    "reviewed_at",
    "predicted_at",
    "predicted_class",
    "model_version",
    "image_sha256",
    "image_format",
    "image_path",
)


@dataclass(frozen=True)
class Labelled:
    request_id: str
    label: str
    predicted_class: str
    model_version: str
    image_stored: bool
    created_at: datetime


def find_prediction(engine: Engine, request_id: str) -> dict[str, Any] | None:
    with engine.connect() as connection:
        row = connection.execute(
            select(predictions).where(predictions.c.request_id == request_id)
        ).first()
    return dict(row._mapping) if row is not None else None


def add_feedback(
    engine: Engine,
    request_id: str,
    label: str,
    reviewer: str | None = None,
    note: str | None = None,
    now: datetime | None = None,
) -> Labelled:
    """Record the confirmed diagnosis of one logged prediction (one transaction)."""
    created = now or datetime.now(UTC)
    with engine.begin() as connection:
        prediction = connection.execute(
            select(
                predictions.c.predicted_class,
                predictions.c.model_version,
                predictions.c.image_path,
            ).where(predictions.c.request_id == request_id)
        ).first()
        if prediction is None:
            raise UnknownPredictionError(request_id)
        _refuse_if_labelled(connection, request_id)
        try:
            with connection.begin_nested():
                connection.execute(
                    insert(feedback).values(
                        request_id=request_id,
                        label=label,
                        reviewer=reviewer,
                        note=note,
                        created_at=created,
                    )
                )
        except IntegrityError:  # labelled by someone else in the meantime
            _refuse_if_labelled(connection, request_id)
            raise
    return Labelled(
        request_id,
        label,
        prediction.predicted_class,
        prediction.model_version,
        prediction.image_path is not None,
        created,
    )


def _refuse_if_labelled(connection, request_id: str) -> None:
    existing = connection.execute(
        select(feedback.c.label, feedback.c.created_at).where(feedback.c.request_id == request_id)
    ).first()
    if existing is not None:
        raise AlreadyLabelledError(request_id, existing.label, existing.created_at)


def reviewed_cases(
    engine: Engine, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Every labelled prediction whose label was given in [since, until) (either bound open
    when None), oldest review first: REVIEWED_CASE_COLUMNS, `image_path` relative to the
    uploads dir and None when the image was not stored (or pruned by the retention)."""
    query = (
        select(
            feedback.c.request_id,
            feedback.c.label,
            feedback.c.reviewer,
            feedback.c.created_at.label("reviewed_at"),
            predictions.c.created_at.label("predicted_at"),
            predictions.c.predicted_class,
            predictions.c.model_version,
            predictions.c.image_sha256,
            predictions.c.image_format,
            predictions.c.image_path,
        )
        .select_from(feedback.join(predictions, feedback.c.request_id == predictions.c.request_id))
        .order_by(feedback.c.created_at, feedback.c.id)
    )
    if since is not None:
        query = query.where(feedback.c.created_at >= since)
    if until is not None:
        query = query.where(feedback.c.created_at < until)
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]
