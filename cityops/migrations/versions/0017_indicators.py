"""Indicators (体征指标): definition versions, values per unit and period, changes, breaches, reported values.

Revision ID: 0017
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

from cityops.core.types import JSONText, UTCDateTime

revision = "0017"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "indicator_definitions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("definition", JSONText, nullable=False),
        sa.Column("valid_from", UTCDateTime, nullable=False),
        sa.UniqueConstraint("code", "version", name="uq_indicator_definition_version"),
    )
    op.create_table(
        "indicator_values",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("indicator_code", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("unit_code", sa.Text, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("period", sa.Text, nullable=False),
        sa.Column("period_start", UTCDateTime, nullable=False),
        sa.Column("value", sa.Double),
        sa.Column("numerator", sa.Double),
        sa.Column("denominator", sa.Double),
        sa.Column("band", sa.Text),
        sa.Column("computed_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("indicator_code", "unit_code", "period", "period_start", name="uq_indicator_value"),
    )
    op.create_index("ix_indicator_values_unit_path", "indicator_values", ["unit_path"])
    op.create_index("ix_indicator_values_unit_period", "indicator_values", ["unit_code", "period", "period_start"])
    op.create_table(
        "indicator_changes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("indicator_code", sa.Text, nullable=False),
        sa.Column("unit_code", sa.Text, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("period", sa.Text, nullable=False),
        sa.Column("period_start", UTCDateTime, nullable=False),
        sa.Column("value", sa.Double),
        sa.Column("band", sa.Text),
        sa.Column("previous_band", sa.Text),
        sa.Column("at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_indicator_changes_unit_path", "indicator_changes", ["unit_path"])
    op.create_table(
        "indicator_breaches",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("indicator_code", sa.Text, nullable=False),
        sa.Column("unit_code", sa.Text, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("period", sa.Text, nullable=False),
        sa.Column("period_start", UTCDateTime, nullable=False),
        sa.Column("value", sa.Double),
        sa.Column("band", sa.Text, nullable=False),
        sa.Column("opened_at", UTCDateTime, nullable=False),
        sa.Column("closed_at", UTCDateTime),
        sa.Column("recovered_value", sa.Double),
        sa.Column("case_id", sa.Integer),
        sa.Column("case_number", sa.Text),
    )
    op.create_index("ix_indicator_breaches_unit_path", "indicator_breaches", ["unit_path"])
    op.create_index("ix_indicator_breaches_open", "indicator_breaches", ["indicator_code", "unit_code", "closed_at"])
    op.create_table(
        "indicator_reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("indicator_code", sa.Text, nullable=False),
        sa.Column("unit_code", sa.Text, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("period", sa.Text, nullable=False),
        sa.Column("period_start", UTCDateTime, nullable=False),
        sa.Column("value", sa.Double, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("entered_by", sa.Text, nullable=False),
        sa.Column("entered_at", UTCDateTime, nullable=False),
        sa.Column("attributes", JSONText, nullable=False),
        sa.UniqueConstraint("indicator_code", "unit_code", "period", "period_start", name="uq_indicator_report"),
    )
    op.create_index("ix_indicator_reports_unit_path", "indicator_reports", ["unit_path"])


def downgrade() -> None:
    for table in ("indicator_reports", "indicator_breaches", "indicator_changes", "indicator_values", "indicator_definitions"):
        op.drop_table(table)
