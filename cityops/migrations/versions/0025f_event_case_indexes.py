"""Event cases: the secondary indexes the case queries use, and no Python call per new case in the R*Tree.

Every case insert maintained 15 single-column secondary indexes, 2 unique ones and, on the embedded store, the
GeoPackage R*Tree trigger, which called back into Python five times per row (ST_IsEmpty, ST_MinX …). The index
set below is the one the queries of the event center read through (docs/architecture.md, "Event center: the
indexes of event_cases", names each query):

- kept: ``reported_at`` (every list's order, date filters, the evaluation), ``unit_path`` (scope), the unique
  ``number`` and ``external_key``;
- composite: ``(state, reported_at)`` for the queues and open cases newest first (was ``state``),
  ``(class_code, reported_at)`` for duplicates and the class filter (was ``class_code``);
- partial (``WHERE … IS NOT NULL``): ``filed_at``, ``dispatched_at``, ``handled_at``, ``deadline_at``,
  ``department_code`` — every query on them compares the column, which implies NOT NULL, and a new case has
  none of them, so intake writes no entry;
- dropped: ``source``, ``grid_code``, ``township_code``, ``reported_by``, ``closed_at`` — no query filters or
  sorts on them alone (they are aggregated over rows another index or a scan found).

The R*Tree insert trigger keeps its name and effect, its envelope read from the ``lon``/``lat`` columns the point
is made of (a case's geometry is always ``POINT(lon lat)``). Its update triggers are unchanged.

Revision ID: 0025f
Revises: 0022b
"""

from alembic import op

revision = "0025f"
down_revision = "0022b"
branch_labels = None
depends_on = None

DROPPED = ("source", "grid_code", "township_code", "reported_by", "closed_at")
PARTIAL = ("filed_at", "dispatched_at", "handled_at", "deadline_at", "department_code")
TRIGGER = "rtree_event_cases_geom_insert"


def upgrade() -> None:
    for col in DROPPED + PARTIAL + ("state", "class_code"):
        op.drop_index(f"ix_event_cases_{col}", "event_cases")
    op.create_index("ix_event_cases_state_reported", "event_cases", ["state", "reported_at"])
    op.create_index("ix_event_cases_class_reported", "event_cases", ["class_code", "reported_at"])
    for col in PARTIAL:
        where = f"{col} IS NOT NULL"
        op.create_index(f"ix_event_cases_{col}", "event_cases", [col], sqlite_where=_text(where),
                        postgresql_where=_text(where))
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
        op.execute(f"""CREATE TRIGGER {TRIGGER} AFTER INSERT ON event_cases WHEN NEW.geom NOT NULL
            BEGIN INSERT OR REPLACE INTO rtree_event_cases_geom VALUES (NEW.id, NEW.lon, NEW.lon, NEW.lat, NEW.lat); END""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
        envelope = "ST_MinX(NEW.geom), ST_MaxX(NEW.geom), ST_MinY(NEW.geom), ST_MaxY(NEW.geom)"
        op.execute(f"""CREATE TRIGGER {TRIGGER} AFTER INSERT ON event_cases
            WHEN (NEW.geom NOT NULL AND NOT ST_IsEmpty(NEW.geom))
            BEGIN INSERT OR REPLACE INTO rtree_event_cases_geom VALUES (NEW.id, {envelope}); END""")
    for col in PARTIAL:
        op.drop_index(f"ix_event_cases_{col}", "event_cases")
    op.drop_index("ix_event_cases_class_reported", "event_cases")
    op.drop_index("ix_event_cases_state_reported", "event_cases")
    for col in DROPPED + PARTIAL + ("state", "class_code"):
        op.create_index(f"ix_event_cases_{col}", "event_cases", [col])


def _text(sql: str):
    import sqlalchemy as sa

    return sa.text(sql)
