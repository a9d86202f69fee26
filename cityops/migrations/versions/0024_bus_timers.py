"""Event bus: the deployment's periodic jobs (SLA sweep, overdue tasks, alarm escalation), each run claimed once
per period however many workers serve.

Revision ID: 0024
Revises: 0023
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bus_timers",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("last_ms", sa.BigInteger, nullable=False),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("runs", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("bus_timers")
