"""Event center (事件中心): cases, append-only transition log, attachments, outbox.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from cityops.core.geometry import Geometry
from cityops.core.spatial_ddl import make_append_only, register_spatial_table, unregister_spatial_table
from cityops.core.types import JSONText, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_STATES = ("reported", "accepted", "filed", "dispatched", "returned", "in_handling", "extension_requested",
           "backlogged", "handled", "rework", "closed", "void")


def upgrade() -> None:
    ts = lambda name, **kw: sa.Column(name, UTCDateTime, **kw)  # noqa: E731
    op.create_table(
        "event_cases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("number", sa.Text, nullable=False, unique=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("external_key", sa.Text, unique=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("class_code", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("urgency", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("lon", sa.Double, nullable=False),
        sa.Column("lat", sa.Double, nullable=False),
        sa.Column("geom", Geometry("POINT"), nullable=False),
        sa.Column("address", sa.Text),
        sa.Column("grid_code", sa.Text, nullable=False),
        sa.Column("township_code", sa.Text),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("department_code", sa.Text),
        sa.Column("assigned_unit_code", sa.Text),
        sa.Column("route", JSONText, nullable=False),
        sa.Column("reporter", JSONText, nullable=False),
        sa.Column("reported_by", sa.Text),
        sa.Column("attributes", JSONText, nullable=False),
        ts("reported_at", nullable=False), ts("accepted_at"), ts("filed_at"), sa.Column("filed_by", sa.Text),
        ts("dispatched_at"), sa.Column("dispatched_by", sa.Text), ts("dispatch_due_at"), ts("handled_at"),
        ts("closed_at"), ts("voided_at"), ts("deadline_at"),
        sa.Column("paused_remaining_s", sa.Double),
        sa.Column("returned_count", sa.Integer, nullable=False),
        sa.Column("rework_count", sa.Integer, nullable=False),
        sa.Column("extension_count", sa.Integer, nullable=False),
        sa.Column("supervision_count", sa.Integer, nullable=False),
        sa.Column("escalation_level", sa.Integer, nullable=False),
        sa.Column("escalated_to", sa.Text),
        sa.Column("due_soon_warned", sa.Integer, nullable=False),
        sa.Column("merged_into", sa.Integer, sa.ForeignKey("event_cases.id")),
        sa.Column("rating", sa.Integer),
        ts("updated_at", nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.CheckConstraint("state IN (" + ", ".join(f"'{s}'" for s in _STATES) + ")", name="ck_event_cases_state"),
        sa.CheckConstraint("kind IN ('component', 'matter')", name="ck_event_cases_kind"),
    )
    for col in ("source", "class_code", "state", "grid_code", "township_code", "unit_path", "department_code",
                "reported_by", "reported_at", "filed_at", "closed_at", "deadline_at"):
        op.create_index(f"ix_event_cases_{col}", "event_cases", [col])
    register_spatial_table("event_cases", "geom", "POINT", "事件案卷 event cases")

    op.create_table(
        "event_transitions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("event_cases.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("from_state", sa.Text),
        sa.Column("to_state", sa.Text, nullable=False),
        ts("at", nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("actor_id", sa.Integer),
        sa.Column("note", sa.Text),
        sa.Column("data", JSONText, nullable=False),
        sa.Column("lon", sa.Double),
        sa.Column("lat", sa.Double),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.UniqueConstraint("case_id", "seq", name="uq_event_transitions_case_seq"),
    )
    op.create_index("ix_event_transitions_case_id", "event_transitions", ["case_id"])
    op.create_index("ix_event_transitions_action", "event_transitions", ["action"])
    op.create_index("ix_event_transitions_at", "event_transitions", ["at"])
    make_append_only("event_transitions")

    op.create_table(
        "event_attachments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("event_cases.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("transition_seq", sa.Integer),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("content_type", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        ts("created_at", nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
    )
    op.create_index("ix_event_attachments_case_id", "event_attachments", ["case_id"])

    op.create_table(
        "event_outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("recipient", sa.Text),
        sa.Column("payload", JSONText, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        ts("created_at", nullable=False),
        ts("delivered_at"),
    )
    op.create_index("ix_event_outbox_case_id", "event_outbox", ["case_id"])
    op.create_index("ix_event_outbox_unit_path", "event_outbox", ["unit_path"])


def downgrade() -> None:
    op.drop_table("event_outbox")
    op.drop_table("event_attachments")
    op.drop_table("event_transitions")
    unregister_spatial_table("event_cases", "geom", op.get_bind())
    op.drop_table("event_cases")
