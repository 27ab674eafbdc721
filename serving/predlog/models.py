"""The prediction log's tables (SQLAlchemy 2 declarative models); Alembic migrations create them.

`predictions`: one row per answered image (POST /predict, /explain, and each classified file of
/predict/batch). `feedback`: at most one confirmed diagnosis per prediction (POST /feedback).
The drift monitor (skindx.monitor) and ingest's feedback source read these tables; a change here
needs a new migration in serving/predlog/migrations/versions/ (`alembic revision`), never an
edit of an applied one.

Column groups (see README, "Operating the model"):
  identity      request_id (the id POST /feedback takes; unique), http_request_id (the HTTP
                request's X-Request-ID: equal to request_id except for batch files, which get
                `<http id>-<index>`), endpoint, batch_index, created_at (UTC)
  model         model_version, card_sha256
  prediction    predicted_class, confidence, probabilities ({class code: p}, every class),
                ood_score (null until the trust issue adds one)
  upload        image_format, image_width, image_height, image_bytes, image_sha256,
                image_path (relative to SKINDX_UPLOADS_DIR; null unless SKINDX_STORE_UPLOADS)
  drift stats   mean_r/g/b, std_r/g/b, brightness (0..1), color_hist (24 floats: 8 bins per
                channel R, G, B, each channel summing to 1): skindx.inference.image_stats
  latency_ms    server time from request start to the answer
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# constraint names fixed here, so that migrations are the same on SQLite and PostgreSQL
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

REQUEST_ID_LENGTH = 80  # a client's X-Request-ID (at most 64) plus a batch index


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class PredictionRecord(Base):
    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH), unique=True)
    http_request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH), index=True)
    endpoint: Mapped[str] = mapped_column(String(16))  # predict | batch | explain
    batch_index: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)

    model_version: Mapped[str] = mapped_column(String(128), index=True)
    card_sha256: Mapped[str | None] = mapped_column(String(64))

    predicted_class: Mapped[str] = mapped_column(String(16), index=True)
    confidence: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[dict[str, Any]] = mapped_column(JSON)
    ood_score: Mapped[float | None] = mapped_column(Float)

    image_format: Mapped[str] = mapped_column(String(8))
    image_width: Mapped[int] = mapped_column(Integer)
    image_height: Mapped[int] = mapped_column(Integer)
    image_bytes: Mapped[int] = mapped_column(Integer)
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    image_path: Mapped[str | None] = mapped_column(String(255))

    mean_r: Mapped[float] = mapped_column(Float)
    mean_g: Mapped[float] = mapped_column(Float)
    mean_b: Mapped[float] = mapped_column(Float)
    std_r: Mapped[float] = mapped_column(Float)
    std_g: Mapped[float] = mapped_column(Float)
    std_b: Mapped[float] = mapped_column(Float)
    brightness: Mapped[float] = mapped_column(Float)
    color_hist: Mapped[list[float]] = mapped_column(JSON)

    latency_ms: Mapped[float] = mapped_column(Float)


class FeedbackRecord(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        String(REQUEST_ID_LENGTH), ForeignKey("predictions.request_id"), unique=True
    )
    label: Mapped[str] = mapped_column(String(16), index=True)
    reviewer: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


predictions = PredictionRecord.__table__
feedback = FeedbackRecord.__table__
