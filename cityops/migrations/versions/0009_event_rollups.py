"""Event center: monthly evaluation rollups, and indexes for the partial months an evaluation reads per case.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_METRICS = ("reported", "valid_reports", "filed", "public_filed", "voided", "due", "closed", "closed_on_time",
            "handled", "reworks", "dispatched", "dispatched_on_time", "dispatch_returned", "supervised")


def upgrade() -> None:
    op.create_table(
        "event_eval_rollups",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dim", sa.Text, nullable=False),
        sa.Column("month", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        *[sa.Column(m, sa.Integer, nullable=False, server_default="0") for m in _METRICS],
        sa.UniqueConstraint("dim", "month", "key", "path", name="uq_event_eval_rollups"),
    )
    op.create_index("ix_event_cases_handled_at", "event_cases", ["handled_at"])
    op.create_index("ix_event_cases_dispatched_at", "event_cases", ["dispatched_at"])
    # Cases stored before this revision.
    from cityops.events import rollup

    rollup.rebuild(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_event_cases_dispatched_at", "event_cases")
    op.drop_index("ix_event_cases_handled_at", "event_cases")
    op.drop_table("event_eval_rollups")
