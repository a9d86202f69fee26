"""Spatial DDL: GeoPackage registration + R*Tree on SQLite, GiST on PostGIS.

Used by migrations (``bind`` omitted: Alembic's connection) and at run time for tables made on demand,
such as the per-layer feature tables of the digital base (pass ``bind``).
"""

from __future__ import annotations

from cityops.core.geometry import CANONICAL_SRID

GPKG_APPLICATION_ID = 0x47504B47  # "GPKG"
GPKG_USER_VERSION = 10400  # GeoPackage 1.4


def _bind(bind=None):
    if bind is not None:
        return bind
    from alembic import op  # inside a migration only: a layer's tables are made at run time with their connection

    return op.get_bind()


def create_geopackage_core(bind=None) -> None:
    """The mandatory GeoPackage tables and SRS rows (SQLite only)."""
    bind = _bind(bind)
    if bind.dialect.name != "sqlite":
        return
    bind.exec_driver_sql(f"PRAGMA application_id = {GPKG_APPLICATION_ID}")
    bind.exec_driver_sql(f"PRAGMA user_version = {GPKG_USER_VERSION}")
    bind.exec_driver_sql(
        """CREATE TABLE IF NOT EXISTS gpkg_spatial_ref_sys (
            srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY, organization TEXT NOT NULL,
            organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT)"""
    )
    bind.exec_driver_sql(
        """CREATE TABLE IF NOT EXISTS gpkg_contents (
            table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL, identifier TEXT UNIQUE,
            description TEXT DEFAULT '',
            last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
            min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER,
            CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id))"""
    )
    bind.exec_driver_sql(
        """CREATE TABLE IF NOT EXISTS gpkg_geometry_columns (
            table_name TEXT NOT NULL, column_name TEXT NOT NULL, geometry_type_name TEXT NOT NULL,
            srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL,
            CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
            CONSTRAINT uk_gc_table_name UNIQUE (table_name),
            CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
            CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id))"""
    )
    bind.exec_driver_sql(
        """CREATE TABLE IF NOT EXISTS gpkg_extensions (
            table_name TEXT, column_name TEXT, extension_name TEXT NOT NULL, definition TEXT NOT NULL,
            scope TEXT NOT NULL,
            CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name))"""
    )
    rows = [
        ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "undefined cartesian coordinate reference system"),
        ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined geographic coordinate reference system"),
    ]
    from pyproj import CRS  # only here, when a store is created: not at every import of the DDL helpers

    for srid in (4326, CANONICAL_SRID):
        crs = CRS.from_epsg(srid)
        rows.append((crs.name, srid, "EPSG", srid, crs.to_wkt("WKT1_GDAL"), crs.name))
    for row in rows:
        bind.exec_driver_sql(
            "INSERT OR IGNORE INTO gpkg_spatial_ref_sys "
            "(srs_name, srs_id, organization, organization_coordsys_id, definition, description) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            row,
        )


def register_spatial_table(
    table: str, column: str, geometry_type: str, description: str = "", pk: str = "id", *,
    identifier: str | None = None, bind=None,
) -> None:
    """Index a geometry column: GeoPackage registration + R*Tree (SQLite) or GiST (PostGIS)."""
    bind = _bind(bind)
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS ix_{table}_{column}_gist ON {table} USING gist ({column})")
        return
    bind.exec_driver_sql(
        "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, srs_id) "
        "VALUES (?, 'features', ?, ?, ?)",
        (table, identifier or table, description, CANONICAL_SRID),
    )
    bind.exec_driver_sql(
        "INSERT INTO gpkg_geometry_columns VALUES (?, ?, ?, ?, 0, 0)",
        (table, column, geometry_type.upper(), CANONICAL_SRID),
    )
    bind.exec_driver_sql(
        "INSERT INTO gpkg_extensions VALUES (?, ?, 'gpkg_rtree_index', "
        "'http://www.geopackage.org/spec120/#extension_rtree', 'write-only')",
        (table, column),
    )
    rt = f"rtree_{table}_{column}"
    envelope = f"ST_MinX(NEW.{column}), ST_MaxX(NEW.{column}), ST_MinY(NEW.{column}), ST_MaxY(NEW.{column})"
    statements = [
        f"CREATE VIRTUAL TABLE {rt} USING rtree(id, minx, maxx, miny, maxy)",
        f"""CREATE TRIGGER {rt}_insert AFTER INSERT ON {table}
            WHEN (NEW.{column} NOT NULL AND NOT ST_IsEmpty(NEW.{column}))
            BEGIN INSERT OR REPLACE INTO {rt} VALUES (NEW.{pk}, {envelope}); END""",
        f"""CREATE TRIGGER {rt}_update6 AFTER UPDATE OF {column} ON {table}
            WHEN OLD.{pk} = NEW.{pk} AND (NEW.{column} NOTNULL AND NOT ST_IsEmpty(NEW.{column}))
            AND (OLD.{column} NOTNULL AND NOT ST_IsEmpty(OLD.{column}))
            BEGIN UPDATE {rt} SET minx = ST_MinX(NEW.{column}), maxx = ST_MaxX(NEW.{column}),
              miny = ST_MinY(NEW.{column}), maxy = ST_MaxY(NEW.{column}) WHERE id = NEW.{pk}; END""",
        f"""CREATE TRIGGER {rt}_update7 AFTER UPDATE OF {column} ON {table}
            WHEN OLD.{pk} = NEW.{pk} AND (NEW.{column} NOTNULL AND NOT ST_IsEmpty(NEW.{column}))
            AND (OLD.{column} ISNULL OR ST_IsEmpty(OLD.{column}))
            BEGIN INSERT INTO {rt} VALUES (NEW.{pk}, {envelope}); END""",
        f"""CREATE TRIGGER {rt}_update2 AFTER UPDATE OF {column} ON {table}
            WHEN OLD.{pk} = NEW.{pk} AND (NEW.{column} IS NULL OR ST_IsEmpty(NEW.{column}))
            BEGIN DELETE FROM {rt} WHERE id = OLD.{pk}; END""",
        f"""CREATE TRIGGER {rt}_update5 AFTER UPDATE ON {table}
            WHEN OLD.{pk} != NEW.{pk} AND (NEW.{column} NOTNULL AND NOT ST_IsEmpty(NEW.{column}))
            BEGIN DELETE FROM {rt} WHERE id = OLD.{pk};
              INSERT OR REPLACE INTO {rt} VALUES (NEW.{pk}, {envelope}); END""",
        f"""CREATE TRIGGER {rt}_update4 AFTER UPDATE ON {table}
            WHEN OLD.{pk} != NEW.{pk} AND (NEW.{column} IS NULL OR ST_IsEmpty(NEW.{column}))
            BEGIN DELETE FROM {rt} WHERE id IN (OLD.{pk}, NEW.{pk}); END""",
        f"""CREATE TRIGGER {rt}_delete AFTER DELETE ON {table} WHEN OLD.{column} NOT NULL
            BEGIN DELETE FROM {rt} WHERE id = OLD.{pk}; END""",
    ]
    for statement in statements:
        bind.exec_driver_sql(statement)


def unregister_spatial_table(table: str, column: str, bind) -> None:
    """Undo register_spatial_table before the table is dropped (SQLite; PostGIS drops the index itself)."""
    if bind.dialect.name != "sqlite":
        return
    bind.exec_driver_sql(f"DROP TABLE IF EXISTS rtree_{table}_{column}")
    for sql in ("DELETE FROM gpkg_extensions WHERE table_name = ?", "DELETE FROM gpkg_geometry_columns WHERE table_name = ?",
                "DELETE FROM gpkg_contents WHERE table_name = ?"):
        bind.exec_driver_sql(sql, (table,))


def make_append_only(table: str, bind=None) -> None:
    """Reject UPDATE and DELETE on ``table`` at the database level (audit and event logs)."""
    bind = _bind(bind)
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(
            f"""CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION '{table} is append-only'; END; $$ LANGUAGE plpgsql"""
        )
        bind.exec_driver_sql(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
        )
        return
    for verb in ("UPDATE", "DELETE"):
        bind.exec_driver_sql(
            f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        )
