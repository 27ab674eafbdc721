"""The prediction log's tables (SQLAlchemy Core); Alembic migrations create them.

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
                ood_score (null when the package has no scorer), tta (the probabilities
                are the mean over the 8 dihedral views; revision 0002)
  upload        image_format, image_width, image_height, image_bytes, image_sha256,
                image_path (relative to SKINDX_UPLOADS_DIR; null unless SKINDX_STORE_UPLOADS)
  drift stats   one Float column per skindx.inference.image_stats.STAT_KEYS (mean_r/g/b,
                std_r/g/b, brightness, hist_r0..hist_b7), of the model's input pixels
  latency_ms    server time from request start to the answer
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)

from skindx.inference.image_stats import STAT_KEYS

# constraint names fixed here, so that migrations are the same on SQLite and PostgreSQL
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

REQUEST_ID_LENGTH = 80  # a client's X-Request-ID (at most 64) plus a batch index
ENDPOINTS = ("predict", "batch", "explain")

metadata = MetaData(naming_convention=NAMING)

predictions = Table(
    "predictions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(REQUEST_ID_LENGTH), nullable=False, unique=True),
    Column("http_request_id", String(REQUEST_ID_LENGTH), nullable=False, index=True),
    Column("endpoint", String(16), nullable=False),
    Column("batch_index", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("model_version", String(128), nullable=False, index=True),
    Column("card_sha256", String(64)),
    Column("predicted_class", String(16), nullable=False, index=True),
    Column("confidence", Float, nullable=False),
    Column("probabilities", JSON, nullable=False),  # {class code: probability}, every class
    Column("ood_score", Float),
    # the probabilities are the mean over the 8 dihedral views (revision 0002)
    Column("tta", Boolean, nullable=False, server_default=false()),
    Column("image_format", String(8), nullable=False),
    Column("image_width", Integer, nullable=False),
    Column("image_height", Integer, nullable=False),
    Column("image_bytes", Integer, nullable=False),
    Column("image_sha256", String(64), nullable=False, index=True),
    Column("image_path", String(255)),
    *(Column(key, Float, nullable=False) for key in STAT_KEYS),
    Column("latency_ms", Float, nullable=False),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "request_id",
        String(REQUEST_ID_LENGTH),
        ForeignKey("predictions.request_id"),
        nullable=False,
        unique=True,
    ),
    Column("label", String(16), nullable=False, index=True),
    Column("reviewer", String(128)),
    Column("note", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
)
