"""Event bus: the outbox (written with the change it reports), consumer cursors, processed events, dead letters.

Revision ID: 0019
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

from cityops.core.types import JSONText

revision = "0019"
down_revision = "0013"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # The writing transaction's id (store.py says why); SQLite has one writer at a time: 0.
    tx_default = sa.text("(pg_current_xact_id()::text::bigint)") if postgres else sa.text("0")
    op.create_table(
        "bus_outbox",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("tx", sa.BigInteger, nullable=False, server_default=tx_default),
        sa.Column("event_id", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("payload", JSONText, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_bus_outbox_tx_seq", "bus_outbox", ["tx", "seq"])
    op.create_table(
        "bus_cursors",
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("tx", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "bus_processed",
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("processed_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "bus_dead_letters",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("consumer", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("payload", JSONText, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("dead_ms", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("consumer", "event_id", name="uq_bus_dead_letters"),
    )


def downgrade() -> None:
    op.drop_table("bus_dead_letters")
    op.drop_table("bus_processed")
    op.drop_table("bus_cursors")
    op.drop_index("ix_bus_outbox_tx_seq", "bus_outbox")
    op.drop_table("bus_outbox")
