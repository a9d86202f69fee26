"""Vector tiles: data stamps of the tile sources (units, buildings) for cache invalidation.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from cityops.core.types import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "tile_sources",
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("changed_at", UTCDateTime, nullable=False),
    )
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    op.bulk_insert(table, [{"source": s, "generation": 0, "changed_at": now} for s in ("units", "buildings")])


def downgrade() -> None:
    op.drop_table("tile_sources")
