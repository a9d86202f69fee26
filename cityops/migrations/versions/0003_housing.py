"""Housing registry: buildings (房屋), households (住户), residents (人口).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from cityops.core.geometry import Geometry
from cityops.core.spatial_ddl import register_spatial_table, unregister_spatial_table
from cityops.core.types import JSONText

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "buildings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text),
        sa.Column("address", sa.Text),
        sa.Column("footprint", Geometry("MULTIPOLYGON"), nullable=False),
        sa.Column("floors", sa.Integer, nullable=False),
        sa.Column("height_m", sa.Double),
        sa.Column("structure", sa.Text, nullable=False),
        sa.Column("use", sa.Text, nullable=False),
        sa.Column("year_built", sa.Integer),
        sa.Column("safety_grade", sa.Text),
        sa.Column("grid_code", sa.Text, sa.ForeignKey("units.code", ondelete="RESTRICT"), nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("attributes", JSONText, nullable=False),
        sa.CheckConstraint("safety_grade IS NULL OR safety_grade IN ('A', 'B', 'C', 'D')", name="ck_buildings_safety_grade"),
    )
    op.create_index("ix_buildings_safety_grade", "buildings", ["safety_grade"])
    op.create_index("ix_buildings_grid_code", "buildings", ["grid_code"])
    op.create_index("ix_buildings_unit_path", "buildings", ["unit_path"])
    register_spatial_table("buildings", "footprint", "MULTIPOLYGON", "房屋 buildings")

    op.create_table(
        "households",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("building_id", sa.Integer, sa.ForeignKey("buildings.id", ondelete="CASCADE"), nullable=False),
        sa.Column("head_name", sa.Text, nullable=False),
        sa.Column("phone", sa.Text),
        sa.Column("address", sa.Text),
        sa.Column("room", sa.Text),
        sa.Column("members", sa.Integer, nullable=False),
        sa.Column("grid_code", sa.Text, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
    )
    op.create_index("ix_households_building_id", "households", ["building_id"])
    op.create_index("ix_households_grid_code", "households", ["grid_code"])
    op.create_index("ix_households_unit_path", "households", ["unit_path"])

    op.create_table(
        "residents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("household_id", sa.Integer, sa.ForeignKey("households.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("id_number", sa.Text),
        sa.Column("birth_year", sa.Integer),
        sa.Column("sex", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("relation", sa.Text),
        sa.Column("elderly", sa.Boolean, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("child", sa.Boolean, nullable=False),
        sa.Column("bedridden", sa.Boolean, nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
    )
    op.create_index("ix_residents_household_id", "residents", ["household_id"])
    op.create_index("ix_residents_unit_path", "residents", ["unit_path"])


def downgrade() -> None:
    op.drop_table("residents")
    op.drop_table("households")
    unregister_spatial_table("buildings", "footprint", op.get_bind())
    op.drop_table("buildings")
