"""Video and calls: cameras (视频监控, GB/T 28181 codes, view, streams) and the operators' call log.

Revision ID: 0023
Revises: 0021
"""

import sqlalchemy as sa
from alembic import op

from cityops.core.geometry import Geometry
from cityops.core.spatial_ddl import register_spatial_table, unregister_spatial_table
from cityops.core.types import JSONText, UTCDateTime

revision = "0023"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "video_cameras",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("type_code", sa.Text, nullable=False),
        sa.Column("geom", Geometry("POINT"), nullable=False),
        sa.Column("direction_deg", sa.Double, nullable=False),
        sa.Column("fov_deg", sa.Double, nullable=False),
        sa.Column("range_m", sa.Double, nullable=False),
        sa.Column("hls_url", sa.Text),
        sa.Column("rtsp_url", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("unit_code", sa.Text, sa.ForeignKey("units.code", ondelete="RESTRICT"), nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("attributes", JSONText, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("length(code) = 20", name="ck_video_cameras_code"),
        sa.CheckConstraint("status IN ('online', 'offline', 'fault')", name="ck_video_cameras_status"),
        sa.CheckConstraint("direction_deg >= 0 AND direction_deg < 360", name="ck_video_cameras_direction"),
        sa.CheckConstraint("fov_deg >= 1 AND fov_deg <= 360", name="ck_video_cameras_fov"),
        sa.CheckConstraint("range_m > 0", name="ck_video_cameras_range"),
    )
    op.create_index("ix_video_cameras_status", "video_cameras", ["status"])
    op.create_index("ix_video_cameras_unit_code", "video_cameras", ["unit_code"])
    op.create_index("ix_video_cameras_unit_path", "video_cameras", ["unit_path"])
    register_spatial_table("video_cameras", "geom", "POINT", "视频监控 cameras")

    op.create_table(
        "call_logs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("direction", sa.Text, nullable=False),
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id", ondelete="SET NULL")),
        sa.Column("department_code", sa.Text),
        sa.Column("unit_code", sa.Text, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("callee_name", sa.Text, nullable=False),
        sa.Column("number", sa.Text, nullable=False),
        sa.Column("called_at", UTCDateTime, nullable=False),
        sa.Column("duration_s", sa.Integer),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("task_incidents.id", ondelete="SET NULL")),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("event_cases.id", ondelete="SET NULL")),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("operator_id", sa.Integer),
        sa.Column("request_key", sa.Text, unique=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("direction IN ('outgoing', 'incoming')", name="ck_call_logs_direction"),
        sa.CheckConstraint("outcome IN ('answered', 'no_answer', 'busy', 'unreachable', 'rejected', 'wrong_number', 'voicemail')",
                           name="ck_call_logs_outcome"),
        sa.CheckConstraint("duration_s IS NULL OR duration_s >= 0", name="ck_call_logs_duration"),
    )
    op.create_index("ix_call_logs_unit_path", "call_logs", ["unit_path"])
    op.create_index("ix_call_logs_called_at", "call_logs", ["called_at"])
    op.create_index("ix_call_logs_person", "call_logs", ["person_id", "called_at"])
    op.create_index("ix_call_logs_incident", "call_logs", ["incident_id", "called_at"])
    op.create_index("ix_call_logs_case", "call_logs", ["case_id", "called_at"])


def downgrade() -> None:
    op.drop_table("call_logs")
    unregister_spatial_table("video_cameras", "geom", op.get_bind())
    op.drop_table("video_cameras")
