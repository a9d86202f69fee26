"""Foundation: GeoPackage core, units, places, departments, people, users, tokens, audit log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from cityops.core.geometry import Geometry
from cityops.core.spatial_ddl import create_geopackage_core, make_append_only, register_spatial_table
from cityops.core.types import JSONText, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_geopackage_core()
    op.create_table(
        "units",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_en", sa.Text),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("parent_code", sa.Text, sa.ForeignKey("units.code", ondelete="RESTRICT")),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("area_m2", sa.Double),
        sa.Column("attributes", JSONText, nullable=False),
        sa.Column("geom", Geometry("MULTIPOLYGON")),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_units_level", "units", ["level"])
    op.create_index("ix_units_parent_code", "units", ["parent_code"])
    op.create_index("ix_units_path", "units", ["path"])
    register_spatial_table("units", "geom", "MULTIPOLYGON", "行政区划与单元网格 administrative units and grids")

    op.create_table(
        "places",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("unit_code", sa.Text, sa.ForeignKey("units.code", ondelete="CASCADE"), nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("attributes", JSONText, nullable=False),
        sa.Column("geom", Geometry("POINT"), nullable=False),
    )
    op.create_index("ix_places_name", "places", ["name"])
    op.create_index("ix_places_unit_code", "places", ["unit_code"])
    op.create_index("ix_places_unit_path", "places", ["unit_path"])
    register_spatial_table("places", "geom", "POINT", "地名 named places")

    op.create_table(
        "departments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_en", sa.Text),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("unit_code", sa.Text, sa.ForeignKey("units.code", ondelete="RESTRICT"), nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("matter_classes", JSONText, nullable=False),
        sa.Column("covered_units", JSONText, nullable=False),
        sa.Column("phone", sa.Text),
        sa.Column("attributes", JSONText, nullable=False),
    )
    op.create_index("ix_departments_unit_code", "departments", ["unit_code"])
    op.create_index("ix_departments_unit_path", "departments", ["unit_path"])

    op.create_table(
        "people",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("post", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("unit_code", sa.Text, sa.ForeignKey("units.code", ondelete="RESTRICT"), nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("attributes", JSONText, nullable=False),
    )
    op.create_index("ix_people_post", "people", ["post"])
    op.create_index("ix_people_unit_code", "people", ["unit_code"])
    op.create_index("ix_people_unit_path", "people", ["unit_path"])
    op.create_table(
        "person_units",
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("unit_code", sa.Text, sa.ForeignKey("units.code", ondelete="CASCADE"), primary_key=True),
    )
    op.create_index("ix_person_units_unit", "person_units", ["unit_code"])
    op.create_table(
        "person_departments",
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("department_id", sa.Integer, sa.ForeignKey("departments.id", ondelete="CASCADE"), primary_key=True),
    )

    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.Text, nullable=False, unique=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text),
        sa.Column("scope_units", JSONText, nullable=False),
        sa.Column("scope_departments", JSONText, nullable=False),
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id", ondelete="SET NULL")),
        sa.Column("language", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("revoked_at", UTCDateTime),
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor_id", sa.Integer),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("entity", sa.Text, nullable=False),
        sa.Column("entity_key", sa.Text, nullable=False),
        sa.Column("unit_path", sa.Text),
        sa.Column("before", JSONText),
        sa.Column("after", JSONText),
        sa.Column("request_id", sa.Text),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    op.create_index("ix_audit_log_entity_key", "audit_log", ["entity_key"])
    op.create_index("ix_audit_log_unit_path", "audit_log", ["unit_path"])
    make_append_only("audit_log")


def downgrade() -> None:
    raise NotImplementedError("the foundation schema has no downgrade; restore from a backup")
