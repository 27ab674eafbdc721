"""predictions.tta: whether the answer is the mean over the 8 dihedral views.

Test-time augmentation became a per-request choice (`?tta=`, default SKINDX_TTA), so the log
says which answers were averaged: the monitor and the feedback loop compare like with like.
Rows written before this revision were answered by a server whose setting the log did not keep;
they read as false (SKINDX_TTA's default then).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("tta", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("tta")
