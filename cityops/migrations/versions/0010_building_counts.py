"""Housing: per-building counts of households, residents and vulnerable residents, kept by triggers, and a
partial index of vulnerable residents by household (the "who is threatened" page of them).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from cityops.housing import counts

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

VULNERABLE = "elderly OR disabled OR child OR bedridden"


def upgrade() -> None:
    for column in counts.COUNT_COLUMNS:
        op.add_column("buildings", sa.Column(column, sa.Integer, nullable=False, server_default="0"))
    bind = op.get_bind()
    counts.rebuild(bind)  # registries stored before this revision (minutes at the census scale)
    counts.install(bind)
    op.create_index("ix_residents_vulnerable_household", "residents", ["household_id", "id"],
                    sqlite_where=sa.text(VULNERABLE), postgresql_where=sa.text(VULNERABLE))


def downgrade() -> None:
    op.drop_index("ix_residents_vulnerable_household", "residents")
    counts.uninstall(op.get_bind())
    for column in counts.COUNT_COLUMNS:  # SQLite ≥ 3.35 drops a column in place, as PostgreSQL does
        op.execute(f"ALTER TABLE buildings DROP COLUMN {column}")
