"""Identity: failed-login counters and lockouts per account and per client address (``identity.throttle``).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

from cityops.core.types import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("window_start", UTCDateTime, nullable=False),
        sa.Column("locked_until", UTCDateTime),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("kind", "key", name="uq_login_throttle"),
    )
    op.create_index("ix_login_throttle_updated_at", "login_throttle", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_login_throttle_updated_at", "login_throttle")
    op.drop_table("login_throttle")
