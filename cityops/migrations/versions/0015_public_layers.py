"""Layers: ``public_read`` — open data that /ogc and the tiles serve without a login.

Revision ID: 0015
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("layers", sa.Column("public_read", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("layers", "public_read")
