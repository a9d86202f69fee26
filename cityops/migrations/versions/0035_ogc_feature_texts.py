"""Layers on SQLite: each current feature's GeoJSON Feature text, written when the feature is (``geojson_<key>``).

OGC API – Features serves a bbox page of a layer by joining these texts; on SQLite writing them per request (GEOS
``to_geojson`` of every geometry, the feature's bytes put together in Python) was most of the page's CPU, in the
serving process, under its GIL. The bulk writer now writes them in the pass that inserts the rows; triggers delete
a text whose row is updated or deleted (``cityops.base.featurestore``). Here: the table and triggers of every
existing layer, and the texts of its rows. PostGIS writes the text in SQL per page: nothing to do there.

Revision ID: 0035
Revises: 0030
"""

import sqlalchemy as sa
from alembic import op

revision = "0035"
down_revision = "0030"
branch_labels = None
depends_on = None


def _layer_tables(bind) -> list[str]:
    names = [f"layer_{key}" for (key,) in bind.execute(sa.text("SELECT key FROM layers")).all()]
    present = set(sa.inspect(bind).get_table_names())
    return [name for name in names if name in present]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    from cityops.base import featurestore

    for name in _layer_tables(bind):
        featurestore.create_geojson_table(bind, name)
        featurestore.fill_texts(bind, name)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    from cityops.base import featurestore

    for name in _layer_tables(bind):
        side = featurestore.geojson_table(name)
        for event in ("update", "delete"):
            op.execute(f'DROP TRIGGER IF EXISTS "{side}_{event}"')
        op.execute(f'DROP TABLE IF EXISTS "{side}"')
