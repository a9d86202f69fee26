"""Vector tiles: building geometry kept ready for the dense tiles.

* ``buildings.tile_geom`` (both backends): each footprint in the z14 pixel grid, snapped, repaired and oriented,
  with its MVT command stream after the first MoveTo as varints (cityops/tiles/prepared.py): a z14 building tile
  is assembled from these bytes instead of encoding every footprint per request. Written after each
  ``building.changed`` by the tiles' consumer and after the bulk loads; filled here for the buildings already stored. A trigger clears the blob when a footprint is
  changed without it, so a stale blob is never read (the footprint is then encoded per tile).
* PostgreSQL: ``buildings.footprint_3857``, the footprint in Web Mercator as a stored generated column (PostgreSQL
  keeps it in step on every write, COPY included), so ``ST_AsMVTGeom`` does not transform each footprint per tile.

Revision ID: 0028
Revises: 0027
"""

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    op.add_column("buildings", sa.Column("tile_geom", sa.LargeBinary(), nullable=True))
    if pg:
        op.execute("ALTER TABLE buildings ADD COLUMN footprint_3857 geometry(MultiPolygon, 3857) "
                   "GENERATED ALWAYS AS (ST_Transform(footprint, 3857)) STORED")
        op.execute("""CREATE FUNCTION cityops_building_tile_geom_stale() RETURNS trigger LANGUAGE plpgsql AS $$
                      BEGIN
                        IF NEW.tile_geom IS NOT DISTINCT FROM OLD.tile_geom
                           AND NOT ST_Equals(NEW.footprint, OLD.footprint) THEN
                          NEW.tile_geom := NULL;
                        END IF;
                        RETURN NEW;
                      END $$""")
        op.execute("CREATE TRIGGER buildings_tile_geom_stale BEFORE UPDATE OF footprint ON buildings FOR EACH ROW "
                   "EXECUTE FUNCTION cityops_building_tile_geom_stale()")
    else:
        op.execute("CREATE TRIGGER buildings_tile_geom_stale AFTER UPDATE OF footprint ON buildings "
                   "WHEN NEW.tile_geom IS OLD.tile_geom AND NEW.footprint IS NOT OLD.footprint "
                   "BEGIN UPDATE buildings SET tile_geom = NULL WHERE id = NEW.id; END")
    from cityops.tiles import prepared

    prepared.fill(bind)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER buildings_tile_geom_stale ON buildings")
        op.execute("DROP FUNCTION cityops_building_tile_geom_stale()")
        op.execute("ALTER TABLE buildings DROP COLUMN footprint_3857")
    else:
        op.execute("DROP TRIGGER buildings_tile_geom_stale")
    op.drop_column("buildings", "tile_geom")
