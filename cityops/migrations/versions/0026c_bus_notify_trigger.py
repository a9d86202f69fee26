"""Event bus: PostgreSQL tells the other processes' readers about new outbox rows from a statement trigger, so a
publishing transaction no longer sends a NOTIFY of its own (a round trip per publishing transaction). NOTIFY is
delivered at commit, and only then; identical notifications of one transaction are delivered once.

Revision ID: 0026c
Revises: 0025f
"""

from alembic import op

revision = "0026c"
down_revision = "0025f"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite processes poll (bus_poll_seconds); the publishing process wakes its own readers
    op.execute("""CREATE FUNCTION cityops_bus_notify() RETURNS trigger LANGUAGE plpgsql AS $$
                  BEGIN PERFORM pg_notify('cityops_bus', ''); RETURN NULL; END $$""")
    op.execute("CREATE TRIGGER bus_outbox_notify AFTER INSERT ON bus_outbox FOR EACH STATEMENT "
               "EXECUTE FUNCTION cityops_bus_notify()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER bus_outbox_notify ON bus_outbox")
    op.execute("DROP FUNCTION cityops_bus_notify()")
