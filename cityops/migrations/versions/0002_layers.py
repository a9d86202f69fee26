"""Digital base: layer catalogue and layer versions.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from cityops.core.types import JSONText, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "layers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.Text, nullable=False, unique=True),
        sa.Column("title_zh", sa.Text, nullable=False),
        sa.Column("title_en", sa.Text, nullable=False),
        sa.Column("description_zh", sa.Text, nullable=False),
        sa.Column("description_en", sa.Text, nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("owner_department", sa.Text),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("geometry_type", sa.Text, nullable=False),
        sa.Column("attribute_schema", JSONText, nullable=False),
        sa.Column("source_crs", sa.Text),
        sa.Column("editable", sa.Boolean, nullable=False),
        sa.Column("current_version", sa.Integer, nullable=False),
        sa.Column("feature_count", sa.Integer, nullable=False),
        sa.Column("bounds", JSONText),
        sa.Column("unit_code", sa.Text, sa.ForeignKey("units.code", ondelete="RESTRICT"), nullable=False),
        sa.Column("unit_path", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_layers_category", "layers", ["category"])
    op.create_index("ix_layers_unit_path", "layers", ["unit_path"])
    op.create_table(
        "layer_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("layer_id", sa.Integer, sa.ForeignKey("layers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("source_name", sa.Text),
        sa.Column("added", sa.Integer, nullable=False),
        sa.Column("removed", sa.Integer, nullable=False),
        sa.Column("repaired", sa.Integer, nullable=False),
        sa.Column("feature_count", sa.Integer, nullable=False),
        sa.Column("restores", sa.Integer),
        sa.Column("note", sa.Text),
        sa.UniqueConstraint("layer_id", "version"),
    )


def downgrade() -> None:
    op.drop_table("layer_versions")
    op.drop_table("layers")
