"""Indicators: a digest per indicator and period, so that a recompute skips the indicators whose values did not change.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

from cityops.core.types import UTCDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "indicator_digests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("indicator_code", sa.Text, nullable=False),
        sa.Column("period", sa.Text, nullable=False),
        sa.Column("period_start", UTCDateTime, nullable=False),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("computed_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("indicator_code", "period", "period_start", name="uq_indicator_digest"),
    )


def downgrade() -> None:
    op.drop_table("indicator_digests")
