"""Task center: incidents, decision log, risk zones, shelters, evacuations, tasks.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from cityops.core.geometry import Geometry
from cityops.core.spatial_ddl import register_spatial_table, unregister_spatial_table
from cityops.core.types import JSONText, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_incidents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("hazard_type", sa.Text, nullable=False),
        sa.Column("plan_key", sa.Text, nullable=False),
        sa.Column("response_level", sa.Integer, nullable=False),
        sa.Column("warning_level", sa.Integer),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("activation", sa.Text, nullable=False),
        sa.Column("risk_point_code", sa.Text),
        sa.Column("hazard_geom", Geometry("GEOMETRY")),
        sa.Column("unit_code", sa.Text, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("event_grade", sa.Integer),
        sa.Column("case_ref", sa.Text),
        sa.Column("drill", sa.Boolean, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("activated_at", UTCDateTime),
        sa.Column("stood_down_at", UTCDateTime),
        sa.Column("closed_at", UTCDateTime),
        sa.Column("closing_note", sa.Text),
        sa.Column("evidence", JSONText, nullable=False),
        sa.CheckConstraint("response_level BETWEEN 1 AND 4", name="ck_task_incidents_level"),
        sa.CheckConstraint("status IN ('proposed', 'active', 'standing_down', 'closed', 'dismissed')",
                           name="ck_task_incidents_status"),
    )
    op.create_index("ix_task_incidents_status", "task_incidents", ["status"])
    op.create_index("ix_task_incidents_risk_point_code", "task_incidents", ["risk_point_code"])
    op.create_index("ix_task_incidents_unit_path", "task_incidents", ["unit_path"])
    op.create_index("ix_task_incidents_drill", "task_incidents", ["drill"])

    op.create_table(
        "task_incident_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("task_incidents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", JSONText, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
    )
    op.create_index("ix_task_incident_log_incident_id", "task_incident_log", ["incident_id"])

    op.create_table(
        "task_risk_zones",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("task_incidents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("geom", Geometry("MULTIPOLYGON"), nullable=False),
        sa.Column("area_m2", sa.Double, nullable=False),
        sa.Column("summary", JSONText, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.UniqueConstraint("incident_id", "version", name="uq_task_risk_zones_version"),
    )
    op.create_index("ix_task_risk_zones_incident_id", "task_risk_zones", ["incident_id"])
    register_spatial_table("task_risk_zones", "geom", "MULTIPOLYGON", "风险区 risk zones")

    op.create_table(
        "task_shelters",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("occupancy", sa.Integer, nullable=False),
        sa.Column("geom", Geometry("POINT"), nullable=False),
        sa.Column("unit_code", sa.Text, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("attributes", JSONText, nullable=False),
        # The database itself refuses an over-full shelter, whatever the caller.
        sa.CheckConstraint("occupancy >= 0 AND occupancy <= capacity", name="ck_task_shelters_occupancy"),
    )
    op.create_index("ix_task_shelters_unit_path", "task_shelters", ["unit_path"])
    register_spatial_table("task_shelters", "geom", "POINT", "安置点 shelters")

    op.create_table(
        "task_evacuations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("task_incidents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("household_id", sa.Integer, nullable=False),
        sa.Column("household_code", sa.Text, nullable=False),
        sa.Column("building_code", sa.Text, nullable=False),
        sa.Column("members", sa.Integer, nullable=False),
        sa.Column("vulnerable", sa.Integer, nullable=False),
        sa.Column("lon", sa.Double, nullable=False),
        sa.Column("lat", sa.Double, nullable=False),
        sa.Column("grid_code", sa.Text, nullable=False),
        sa.Column("village_code", sa.Text, nullable=False),
        sa.Column("township_code", sa.Text, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("assignee_person_id", sa.Integer),
        sa.Column("assignee_name", sa.Text),
        sa.Column("assignee_post", sa.Text),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("shelter_id", sa.Integer, sa.ForeignKey("task_shelters.id", ondelete="RESTRICT")),
        sa.Column("in_zone", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("drill", sa.Boolean, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("updated_by", sa.Text),
        sa.UniqueConstraint("incident_id", "household_id", name="uq_task_evacuations_household"),
    )
    op.create_index("ix_task_evacuations_incident_id", "task_evacuations", ["incident_id"])
    op.create_index("ix_task_evacuations_unit_path", "task_evacuations", ["unit_path"])
    op.create_index("ix_task_evacuations_state", "task_evacuations", ["state"])

    op.create_table(
        "task_evacuation_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("evacuation_id", sa.Integer, sa.ForeignKey("task_evacuations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("incident_id", sa.Integer, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("from_state", sa.Text),
        sa.Column("to_state", sa.Text, nullable=False),
        sa.Column("shelter_id", sa.Integer),
        sa.Column("lon", sa.Double),
        sa.Column("lat", sa.Double),
        sa.Column("note", sa.Text),
        sa.Column("request_key", sa.Text),
    )
    op.create_index("ix_task_evacuation_events_evacuation_id", "task_evacuation_events", ["evacuation_id"])
    op.create_index("ix_task_evacuation_events_incident_id", "task_evacuation_events", ["incident_id"])

    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("tasks.id", ondelete="CASCADE")),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("task_incidents.id", ondelete="CASCADE")),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("goal", sa.Text),
        sa.Column("deadline", UTCDateTime),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("unit_code", sa.Text, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("assignee_role", sa.Text),
        sa.Column("assignee_person_id", sa.Integer),
        sa.Column("assignee_name", sa.Text),
        sa.Column("attachments", JSONText, nullable=False),
        sa.Column("source_kind", sa.Text),
        sa.Column("source_ref", sa.Text),
        sa.Column("action_key", sa.Text),
        sa.Column("drill", sa.Boolean, nullable=False),
        sa.Column("progress_note", sa.Text),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("completed_at", UTCDateTime),
        sa.Column("reminded_at", UTCDateTime),
        sa.Column("escalated_at", UTCDateTime),
        sa.CheckConstraint("status IN ('open', 'done', 'cancelled')", name="ck_tasks_status"),
    )
    op.create_index("ix_tasks_parent_id", "tasks", ["parent_id"])
    op.create_index("ix_tasks_incident_id", "tasks", ["incident_id"])
    op.create_index("ix_tasks_deadline", "tasks", ["deadline"])
    op.create_index("ix_tasks_status", "tasks", ["status"])
    op.create_index("ix_tasks_unit_path", "tasks", ["unit_path"])


def downgrade() -> None:
    op.drop_table("tasks")
    op.drop_table("task_evacuation_events")
    op.drop_table("task_evacuations")
    unregister_spatial_table("task_shelters", "geom", op.get_bind())
    op.drop_table("task_shelters")
    unregister_spatial_table("task_risk_zones", "geom", op.get_bind())
    op.drop_table("task_risk_zones")
    op.drop_table("task_incident_log")
    op.drop_table("task_incidents")
