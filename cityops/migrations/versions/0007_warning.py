"""Early warning: risk points (风险点位), warning history, warning observation store.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from cityops.core.geometry import Geometry
from cityops.core.spatial_ddl import register_spatial_table, unregister_spatial_table
from cityops.core.types import JSONText, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "risk_points",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("hazard_type", sa.Text, nullable=False),
        sa.Column("geom", Geometry("POINT"), nullable=False),
        sa.Column("radius_m", sa.Double, nullable=False),
        sa.Column("unit_code", sa.Text, sa.ForeignKey("units.code", ondelete="RESTRICT"), nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("building_codes", JSONText, nullable=False),
        sa.Column("datastreams", JSONText, nullable=False),
        sa.Column("model", JSONText, nullable=False),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("level_since", UTCDateTime),
        sa.Column("assessed_at", UTCDateTime),
        sa.Column("assessment", JSONText),
        sa.Column("attributes", JSONText, nullable=False),
        sa.CheckConstraint("level IN ('none', 'blue', 'yellow', 'orange', 'red')", name="ck_risk_points_level"),
    )
    op.create_index("ix_risk_points_hazard_type", "risk_points", ["hazard_type"])
    op.create_index("ix_risk_points_unit_code", "risk_points", ["unit_code"])
    op.create_index("ix_risk_points_unit_path", "risk_points", ["unit_path"])
    op.create_index("ix_risk_points_level", "risk_points", ["level"])
    register_spatial_table("risk_points", "geom", "POINT", "风险点位 risk points")

    op.create_table(
        "risk_warnings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("risk_point_id", sa.Integer, sa.ForeignKey("risk_points.id", ondelete="CASCADE"), nullable=False),
        sa.Column("identifier", sa.Text, nullable=False, unique=True),
        sa.Column("msg_type", sa.Text, nullable=False),
        sa.Column("cap_references", sa.Text),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("previous_level", sa.Text, nullable=False),
        sa.Column("issued_at", UTCDateTime, nullable=False),
        sa.Column("reasons", JSONText, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.CheckConstraint("msg_type IN ('Alert', 'Update', 'Cancel')", name="ck_risk_warnings_msg_type"),
    )
    op.create_index("ix_risk_warnings_point_issued", "risk_warnings", ["risk_point_id", "issued_at"])
    op.create_index("ix_risk_warnings_level", "risk_warnings", ["level"])
    op.create_index("ix_risk_warnings_issued_at", "risk_warnings", ["issued_at"])
    op.create_index("ix_risk_warnings_unit_path", "risk_warnings", ["unit_path"])

    op.create_table(
        "warning_observations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("datastream_id", sa.Integer, nullable=False),
        sa.Column("phenomenon_time", UTCDateTime, nullable=False),
        sa.Column("value", sa.Double, nullable=False),
        sa.UniqueConstraint("datastream_id", "phenomenon_time", name="uq_warning_observations_stream_time"),
    )


def downgrade() -> None:
    op.drop_table("warning_observations")
    op.drop_table("risk_warnings")
    unregister_spatial_table("risk_points", "geom", op.get_bind())
    op.drop_table("risk_points")
