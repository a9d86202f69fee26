"""Notifications: messages, recipients (the inbox), deliveries (the outbox per channel), timeline, preferences,
Web Push subscriptions.

Revision ID: 0021
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

from cityops.core.types import JSONText, UTCDateTime

revision = "0021"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notify_messages",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False, index=True),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("subject_kind", sa.Text),
        sa.Column("subject_id", sa.Text),
        sa.Column("link", sa.Text),
        sa.Column("unit_code", sa.Text, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False, index=True),
        sa.Column("addresses", JSONText, nullable=False),
        sa.Column("channels", JSONText),
        sa.Column("policy", sa.Text),
        sa.Column("policy_version", sa.Integer),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("escalate_at", UTCDateTime, index=True),
        sa.Column("status", sa.Text, nullable=False, index=True),
        sa.Column("acknowledged_at", UTCDateTime),
        sa.Column("acknowledged_by", sa.Integer),
        sa.Column("dedup_key", sa.Text, unique=True),
        sa.Column("data", JSONText, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "notify_recipients",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("message_id", sa.Integer, sa.ForeignKey("notify_messages.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("person_id", sa.Integer),
        sa.Column("user_id", sa.Integer),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("via", sa.Text, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False, index=True),
        sa.Column("read_at", UTCDateTime),
        sa.Column("acknowledged_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("message_id", "key", name="uq_notify_recipients"),
    )
    op.create_index("ix_notify_recipients_person", "notify_recipients", ["person_id", "id"])
    op.create_index("ix_notify_recipients_user", "notify_recipients", ["user_id", "id"])
    op.create_table(
        "notify_deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("message_id", sa.Integer, sa.ForeignKey("notify_messages.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("recipient_id", sa.Integer, sa.ForeignKey("notify_recipients.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("target", sa.Text),
        sa.Column("idem_key", sa.Text, nullable=False, unique=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("claimed_until", UTCDateTime),
        sa.Column("errors", JSONText, nullable=False),
        sa.Column("deferred", sa.Boolean, nullable=False),
        sa.Column("queued_at", UTCDateTime, nullable=False),
        sa.Column("sent_at", UTCDateTime),
        sa.Column("delivered_at", UTCDateTime),
        sa.Column("read_at", UTCDateTime),
        sa.Column("acknowledged_at", UTCDateTime),
    )
    op.create_index("ix_notify_deliveries_due", "notify_deliveries", ["state", "next_attempt_at"])
    op.create_table(
        "notify_timeline",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("message_id", sa.Integer, sa.ForeignKey("notify_messages.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("what", sa.Text, nullable=False),
        sa.Column("recipient_id", sa.Integer),
        sa.Column("channel", sa.Text),
        sa.Column("step", sa.Integer),
        sa.Column("detail", JSONText, nullable=False),
    )
    op.create_table(
        "notify_preferences",
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("channels", JSONText, nullable=False),
        sa.Column("quiet_start", sa.Text),
        sa.Column("quiet_end", sa.Text),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "notify_push_subscriptions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("person_id", sa.Integer, index=True),
        sa.Column("endpoint", sa.Text, nullable=False, unique=True),
        sa.Column("p256dh", sa.Text, nullable=False),
        sa.Column("auth", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("gone_at", UTCDateTime),
    )


def downgrade() -> None:
    for table in ("notify_push_subscriptions", "notify_preferences", "notify_timeline", "notify_deliveries",
                  "notify_recipients", "notify_messages"):
        op.drop_table(table)
