"""The prediction log: predictions and feedback.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# skindx.inference.image_stats.STAT_KEYS as of this revision (a migration never follows code)
STAT_COLUMNS = (
    *("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "brightness"),
    *(f"hist_{c}{i}" for c in "rgb" for i in range(8)),
)


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=80), nullable=False),
        sa.Column("http_request_id", sa.String(length=80), nullable=False),
        sa.Column("endpoint", sa.String(length=16), nullable=False),
        sa.Column("batch_index", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("card_sha256", sa.String(length=64), nullable=True),
        sa.Column("predicted_class", sa.String(length=16), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("ood_score", sa.Float(), nullable=True),
        sa.Column("image_format", sa.String(length=8), nullable=False),
        sa.Column("image_width", sa.Integer(), nullable=False),
        sa.Column("image_height", sa.Integer(), nullable=False),
        sa.Column("image_bytes", sa.Integer(), nullable=False),
        sa.Column("image_sha256", sa.String(length=64), nullable=False),
        sa.Column("image_path", sa.String(length=255), nullable=True),
        *(sa.Column(key, sa.Float(), nullable=False) for key in STAT_COLUMNS),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predictions")),
        sa.UniqueConstraint("request_id", name=op.f("uq_predictions_request_id")),
    )
    for column in ("http_request_id", "created_at", "model_version", "predicted_class"):
        op.create_index(op.f(f"ix_predictions_{column}"), "predictions", [column])
    op.create_index(op.f("ix_predictions_image_sha256"), "predictions", ["image_sha256"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=80), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=False),
        sa.Column("reviewer", sa.String(length=128), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["predictions.request_id"],
            name=op.f("fk_feedback_request_id_predictions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
        sa.UniqueConstraint("request_id", name=op.f("uq_feedback_request_id")),
    )
    op.create_index(op.f("ix_feedback_label"), "feedback", ["label"])
    op.create_index(op.f("ix_feedback_created_at"), "feedback", ["created_at"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("predictions")
