"""Directives (一键智达): directives, their receipts (one per receiving unit, a tree) and their log.

Revision ID: 0022b
Revises: 0022
"""

import sqlalchemy as sa
from alembic import op

from cityops.core.types import JSONText, UTCDateTime

revision = "0022b"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "directives",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("attachments", JSONText, nullable=False),
        sa.Column("deadline", UTCDateTime),
        sa.Column("targets", JSONText, nullable=False),
        sa.Column("issued_by", sa.Text, nullable=False),
        sa.Column("issuer_name", sa.Text, nullable=False),
        sa.Column("unit_code", sa.Text, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
    )
    op.create_index("ix_directives_unit_path", "directives", ["unit_path"])
    op.create_table(
        "directive_receipts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("directive_id", sa.Integer, sa.ForeignKey("directives.id", ondelete="CASCADE"), nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("directive_receipts.id", ondelete="CASCADE")),
        sa.Column("depth", sa.Integer, nullable=False),
        sa.Column("unit_code", sa.Text, nullable=False),
        sa.Column("department_code", sa.Text, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("recipients", JSONText, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("sent_at", UTCDateTime, nullable=False),
        sa.Column("delivered_at", UTCDateTime),
        sa.Column("read_at", UTCDateTime),
        sa.Column("read_by", sa.Text),
        sa.Column("confirmed_at", UTCDateTime),
        sa.Column("confirmed_by", sa.Text),
        sa.Column("reported_at", UTCDateTime),
        sa.Column("reported_by", sa.Text),
        sa.Column("report", sa.Text),
        sa.Column("reminders", sa.Integer, nullable=False),
        sa.Column("last_reminded_at", UTCDateTime),
        sa.Column("escalated_at", UTCDateTime),
        sa.UniqueConstraint("directive_id", "unit_code", "department_code", name="uq_directive_receipts_unit"),
        sa.CheckConstraint("state IN ('sent', 'read', 'confirmed', 'reported')", name="ck_directive_receipts_state"),
    )
    op.create_index("ix_directive_receipts_directive_path", "directive_receipts", ["directive_id", "unit_path"])
    op.create_index("ix_directive_receipts_open", "directive_receipts", ["state", "sent_at"])
    op.create_table(
        "directive_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("directive_id", sa.Integer, sa.ForeignKey("directives.id", ondelete="CASCADE"), nullable=False),
        sa.Column("receipt_id", sa.Integer),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("data", JSONText, nullable=False),
    )
    op.create_index("ix_directive_log_directive_id", "directive_log", ["directive_id"])


def downgrade() -> None:
    op.drop_table("directive_log")
    op.drop_table("directive_receipts")
    op.drop_table("directives")
