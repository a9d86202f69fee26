"""Vector tiles: the buildings layer's attributes kept encoded with each building's tile geometry.

``buildings.tile_geom`` (format 2, cityops/tiles/prepared.py) now also holds the layer's attribute values as
encoded MVT fields, so a z14 building tile reads an id and this blob per building. The triggers of migration 0028
that clear a blob whose footprint changed without it now also clear it when one of those attributes changes
(the tile then encodes that building itself until the tiles' consumer of ``building.changed`` prepares it again).
Every stored blob is written again in the new format (a blob of the old one is never read).

PostgreSQL: ``buildings.footprint_z14``, ``ST_AsMVTGeom`` of the footprint for the whole of zoom 14 (extent 4096 per
tile: 4096 × 2^14 across the world), a stored generated column (PostgreSQL keeps it on every write, COPY included).
A z14 building tile's ``ST_AsMVT`` statement moves it to the tile's corner for every footprint wholly inside the
buffered tile instead of clipping, snapping, validating and orienting each one per tile
(cityops/tiles/service.py, ``prepared.PIXEL_GRID``).

Revision ID: 0031
Revises: 0035
"""

from alembic import op

revision = "0031"
down_revision = "0035"
branch_labels = None
depends_on = None

#: The source columns of the tile's attributes (cityops.tiles.prepared.SOURCE_COLUMNS at this revision).
COLUMNS = ("code", "floors", "height_m", "use", "structure", "safety_grade", "year_built", "grid_code")


def _triggers(columns: tuple[str, ...]) -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    changed_sqlite = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in ("footprint",) + columns)
    if pg:
        op.execute("DROP TRIGGER buildings_tile_geom_stale ON buildings")
        attrs = ""
        if columns:
            new, old = ", ".join(f"NEW.{c}" for c in columns), ", ".join(f"OLD.{c}" for c in columns)
            attrs = f" OR ({new}) IS DISTINCT FROM ({old})"
        op.execute(f"""CREATE OR REPLACE FUNCTION cityops_building_tile_geom_stale() RETURNS trigger LANGUAGE plpgsql AS $$
                       BEGIN
                         IF NEW.tile_geom IS NOT DISTINCT FROM OLD.tile_geom
                            AND (NOT ST_Equals(NEW.footprint, OLD.footprint){attrs}) THEN
                           NEW.tile_geom := NULL;
                         END IF;
                         RETURN NEW;
                       END $$""")
        op.execute(f"CREATE TRIGGER buildings_tile_geom_stale BEFORE UPDATE OF {', '.join(('footprint',) + columns)} "
                   "ON buildings FOR EACH ROW EXECUTE FUNCTION cityops_building_tile_geom_stale()")
    else:
        op.execute("DROP TRIGGER buildings_tile_geom_stale")
        op.execute(f"CREATE TRIGGER buildings_tile_geom_stale AFTER UPDATE OF {', '.join(('footprint',) + columns)} "
                   f"ON buildings WHEN NEW.tile_geom IS OLD.tile_geom AND ({changed_sqlite}) "
                   "BEGIN UPDATE buildings SET tile_geom = NULL WHERE id = NEW.id; END")


def upgrade() -> None:
    _triggers(COLUMNS)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE buildings ADD COLUMN footprint_z14 geometry GENERATED ALWAYS AS "
                   "(ST_AsMVTGeom(ST_Transform(footprint, 3857), ST_TileEnvelope(0, 0, 0)::box2d, 4096 * 16384, 0, true)) "
                   "STORED")
    from cityops.tiles import prepared

    prepared.fill(op.get_bind(), only_missing=False)


def downgrade() -> None:
    _triggers(())
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE buildings DROP COLUMN footprint_z14")
    # Blobs of the new format are not read by the old code (it checks the format): they are cleared, and
    # ``cityops tiles prepare`` of that code writes them again.
    op.execute("UPDATE buildings SET tile_geom = NULL")
