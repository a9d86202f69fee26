"""Duty (值班值守): roster assignments and shift handovers.

Revision ID: 0022
Revises: 0024
"""

import sqlalchemy as sa
from alembic import op

from cityops.core.types import JSONText, UTCDateTime

revision = "0022"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "duty_assignments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("roster", sa.Text, nullable=False),
        sa.Column("unit_code", sa.Text, sa.ForeignKey("units.code", ondelete="CASCADE"), nullable=False),
        sa.Column("department_code", sa.Text),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id", ondelete="CASCADE"), nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("shift", sa.Text, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("starts_at", UTCDateTime, nullable=False),
        sa.Column("ends_at", UTCDateTime, nullable=False),
        sa.Column("swapped_from", sa.Integer),
        sa.Column("note", sa.Text),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("ends_at > starts_at", name="ck_duty_assignments_span"),
    )
    op.create_index("ix_duty_assignments_unit_path", "duty_assignments", ["unit_path"])
    op.create_index("ix_duty_assignments_roster_time", "duty_assignments", ["roster", "starts_at"])
    op.create_index("ix_duty_assignments_person_time", "duty_assignments", ["person_id", "starts_at"])
    op.create_index("ix_duty_assignments_time", "duty_assignments", ["starts_at", "ends_at"])
    op.create_table(
        "duty_handovers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("roster", sa.Text, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("handed_by", sa.Integer, sa.ForeignKey("people.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("taken_by", sa.Integer, sa.ForeignKey("people.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("items", JSONText, nullable=False),
        sa.Column("carried_from", sa.Integer, sa.ForeignKey("duty_handovers.id", ondelete="SET NULL")),
        sa.Column("created_by", sa.Text, nullable=False),
    )
    op.create_index("ix_duty_handovers_roster", "duty_handovers", ["roster"])
    op.create_index("ix_duty_handovers_unit_path", "duty_handovers", ["unit_path"])


def downgrade() -> None:
    op.drop_table("duty_handovers")
    op.drop_table("duty_assignments")
