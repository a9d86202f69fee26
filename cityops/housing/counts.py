"""Per-building counts (户数 · 人数 · 重点人员数): households, residents, vulnerable residents and each
vulnerable flag, kept on the building row by database triggers.

"Who is threatened" sums these over a zone's buildings instead of joining the zone's residents: at the census
scale a 1 km² zone holds about 2,800 buildings and 11,000 residents, and the join was most of the answer's time.

Triggers rather than the service layer, so that every writer keeps the counts exact: the API, bulk loads, the
demo generator, SQL by hand and cascading deletes. Inserts, and changes of a resident's flags, add deltas;
deleting or moving a household recounts the buildings concerned (rare, and a recount is exact whatever order
cascades run in). On PostgreSQL the triggers are per statement with transition tables, so a COPY of a million
residents updates each building once, not once per row; SQLite has only row triggers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection

from cityops.core.storage import storage_of

#: The count columns on ``buildings``, in the order "who is threatened" reports them.
COUNT_COLUMNS = ("households", "residents", "vulnerable", "elderly", "disabled", "child", "bedridden")
VULNERABLE_FLAGS = ("elderly", "disabled", "child", "bedridden")

_TRIGGERS = {
    "sqlite": ("households_counts_insert", "households_counts_delete", "households_counts_move",
               "residents_counts_insert", "residents_counts_delete", "residents_counts_update"),
    "postgresql": ("households_counts_insert", "households_counts_delete", "households_counts_update",
                   "residents_counts_insert", "residents_counts_delete", "residents_counts_update"),
}
_FUNCTIONS = ("cityops_recount_buildings(integer[])", "cityops_households_inserted()", "cityops_households_deleted()",
              "cityops_households_updated()", "cityops_residents_changed()")


def _vulnerable(alias: str) -> str:
    return "(" + " OR ".join(f"{alias}.{f}" for f in VULNERABLE_FLAGS) + ")"


def _resident_counts(counted: str = "*") -> list[str]:
    """Aggregates of residents ``r`` in COUNT_COLUMNS[1:] order (residents, vulnerable, each flag)."""
    return [f"count({counted})", f"count({counted}) FILTER (WHERE {_vulnerable('r')})",
            *[f"count({counted}) FILTER (WHERE r.{f})" for f in VULNERABLE_FLAGS]]


def _recount(where: str) -> str:
    """UPDATE buildings with every count recomputed from households and residents, for the rows ``where``."""
    resident_counts = ", ".join(_resident_counts())
    return (f"UPDATE buildings SET households = (SELECT count(*) FROM households h WHERE h.building_id = buildings.id), "
            f"({', '.join(COUNT_COLUMNS[1:])}) = (SELECT {resident_counts} FROM residents r "
            f"JOIN households h ON h.id = r.household_id WHERE h.building_id = buildings.id) WHERE {where}")


def _sqlite_resident_delta(row: str, sign: str) -> str:
    """Add (``+``) or take away (``-``) one resident row's counts on its household's building."""
    sets = [f"residents = residents {sign} 1",
            f"vulnerable = vulnerable {sign} {_vulnerable(row)}",
            *[f"{f} = {f} {sign} ({row}.{f} != 0)" for f in VULNERABLE_FLAGS]]
    return (f"UPDATE buildings SET {', '.join(sets)} "
            f"WHERE id = (SELECT building_id FROM households WHERE id = {row}.household_id);")


def _sqlite_ddl() -> list[str]:
    return [
        "CREATE TRIGGER households_counts_insert AFTER INSERT ON households BEGIN "
        "UPDATE buildings SET households = households + 1 WHERE id = NEW.building_id; END",
        f"CREATE TRIGGER households_counts_delete AFTER DELETE ON households BEGIN {_recount('id = OLD.building_id')}; END",
        "CREATE TRIGGER households_counts_move AFTER UPDATE OF building_id ON households "
        f"WHEN OLD.building_id IS NOT NEW.building_id BEGIN {_recount('id IN (OLD.building_id, NEW.building_id)')}; END",
        f"CREATE TRIGGER residents_counts_insert AFTER INSERT ON residents BEGIN {_sqlite_resident_delta('NEW', '+')} END",
        f"CREATE TRIGGER residents_counts_delete AFTER DELETE ON residents BEGIN {_sqlite_resident_delta('OLD', '-')} END",
        "CREATE TRIGGER residents_counts_update AFTER UPDATE OF household_id, elderly, disabled, child, bedridden "
        f"ON residents BEGIN {_sqlite_resident_delta('OLD', '-')} {_sqlite_resident_delta('NEW', '+')} END",
    ]


def _postgresql_resident_delta(rows: str, sign: str) -> str:
    """Signed counts per building of a transition table's residents (a resident whose household is gone, in a
    cascade, is skipped: the household's own trigger recounts that building)."""
    columns = ", ".join(f"{sign}{v} AS {c}" for v, c in zip(_resident_counts(), COUNT_COLUMNS[1:]))
    return f"SELECT h.building_id, {columns} FROM {rows} r JOIN households h ON h.id = r.household_id GROUP BY h.building_id"


def _postgresql_apply(*deltas: str) -> str:
    names = COUNT_COLUMNS[1:]
    sums = ", ".join(f"sum({n}) AS {n}" for n in names)
    return (f"UPDATE buildings b SET {', '.join(f'{n} = b.{n} + d.{n}' for n in names)} FROM "
            f"(SELECT building_id, {sums} FROM ({' UNION ALL '.join(deltas)}) x GROUP BY building_id) d "
            f"WHERE b.id = d.building_id;")


def _postgresql_ddl() -> list[str]:
    new, old = _postgresql_resident_delta("new_rows", ""), _postgresql_resident_delta("old_rows", "-")
    return [
        f"CREATE OR REPLACE FUNCTION cityops_recount_buildings(ids integer[]) RETURNS void LANGUAGE sql AS $$ "
        f"{_recount('buildings.id = ANY(ids)')} $$",
        "CREATE OR REPLACE FUNCTION cityops_households_inserted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "UPDATE buildings b SET households = b.households + d.n FROM "
        "(SELECT building_id, count(*) AS n FROM new_rows GROUP BY building_id) d WHERE b.id = d.building_id; "
        "RETURN NULL; END $$",
        "CREATE OR REPLACE FUNCTION cityops_households_deleted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM cityops_recount_buildings(ARRAY(SELECT DISTINCT building_id FROM old_rows)); RETURN NULL; END $$",
        # Transition tables rule out "UPDATE OF building_id": every update comes here, and only moves recount.
        "CREATE OR REPLACE FUNCTION cityops_households_updated() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM cityops_recount_buildings(ARRAY(SELECT unnest(ARRAY[o.building_id, n.building_id]) FROM old_rows o "
        "JOIN new_rows n ON n.id = o.id WHERE n.building_id IS DISTINCT FROM o.building_id)); RETURN NULL; END $$",
        "CREATE OR REPLACE FUNCTION cityops_residents_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF TG_OP = 'INSERT' THEN {_postgresql_apply(new)} "
        f"ELSIF TG_OP = 'DELETE' THEN {_postgresql_apply(old)} "
        f"ELSE {_postgresql_apply(new, old)} END IF; RETURN NULL; END $$",
        "CREATE TRIGGER households_counts_insert AFTER INSERT ON households REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION cityops_households_inserted()",
        "CREATE TRIGGER households_counts_delete AFTER DELETE ON households REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION cityops_households_deleted()",
        "CREATE TRIGGER households_counts_update AFTER UPDATE ON households REFERENCING OLD TABLE AS old_rows "
        "NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cityops_households_updated()",
        "CREATE TRIGGER residents_counts_insert AFTER INSERT ON residents REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION cityops_residents_changed()",
        "CREATE TRIGGER residents_counts_delete AFTER DELETE ON residents REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION cityops_residents_changed()",
        "CREATE TRIGGER residents_counts_update AFTER UPDATE ON residents REFERENCING OLD TABLE AS old_rows "
        "NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cityops_residents_changed()",
    ]


def install(conn: Connection) -> None:
    """Create the triggers (and on PostgreSQL their functions)."""
    for statement in storage_of(conn).trigger_ddl(sqlite=_sqlite_ddl(), postgresql=_postgresql_ddl()):
        conn.exec_driver_sql(statement)


def uninstall(conn: Connection) -> None:
    storage = storage_of(conn)
    for name in storage.trigger_ddl(**_TRIGGERS):
        conn.exec_driver_sql(storage.drop_trigger(name, name.split("_", 1)[0]))
    for statement in storage.trigger_ddl(postgresql=[f"DROP FUNCTION IF EXISTS {f}" for f in _FUNCTIONS]):
        conn.exec_driver_sql(statement)


def _fresh_counts() -> str:
    """Every count per building with households, computed from the rows (SQLite has no derived column lists,
    so the columns are named inside)."""
    values = ["count(DISTINCT h.id)", *_resident_counts("r.id")]
    return (f"SELECT h.building_id AS building_id, {', '.join(f'{v} AS {c}' for v, c in zip(values, COUNT_COLUMNS))} "
            f"FROM households h LEFT JOIN residents r ON r.household_id = h.id GROUP BY h.building_id")


def rebuild(conn: Connection) -> None:
    """Recount every building in one grouped pass (after a load that bypassed the triggers, or a migration)."""
    conn.exec_driver_sql("UPDATE buildings SET " + ", ".join(f"{c} = 0" for c in COUNT_COLUMNS) +
                         " WHERE " + " OR ".join(f"{c} != 0" for c in COUNT_COLUMNS))
    conn.exec_driver_sql(f"UPDATE buildings SET {', '.join(f'{c} = c.{c}' for c in COUNT_COLUMNS)} "
                         f"FROM ({_fresh_counts()}) c WHERE buildings.id = c.building_id")


def mismatches(conn: Connection) -> int:
    """Buildings whose stored counts differ from a fresh count: 0 when the triggers kept them exact."""
    differ = " OR ".join(f"coalesce(c.{c}, 0) != b.{c}" for c in COUNT_COLUMNS)
    return int(conn.exec_driver_sql(f"SELECT count(*) FROM buildings b LEFT JOIN ({_fresh_counts()}) c "
                                    f"ON c.building_id = b.id WHERE {differ}").scalar())


@contextmanager
def suspended(conn: Connection) -> Iterator[None]:
    """Bulk loads that write the counts themselves (the demo generator) drop the triggers for the load and
    put them back after, in the same transaction."""
    uninstall(conn)
    try:
        yield
    finally:
        install(conn)
