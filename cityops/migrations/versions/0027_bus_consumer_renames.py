"""Event bus: consumers renamed when the cases filed for other capabilities' facts moved to the capability whose fact
it is (the incident's case from the event center's ``events.incident_case`` to the task center's
``tasks.incident_case``). A renamed consumer takes over the old one's position, its record of events applied and its
dead letters: without this it would start at the outbox head as a new consumer does, and an upgrade in the middle of
an incident would skip the incident events the old consumer had not yet applied. (On JetStream the durable
consumers carry the name too and a new one is delivered only what is published after it is made: stop the
publishers and let the consumers drain their stream before such an upgrade; the metric cityops_bus_lag_seconds shows each
consumer's lag.)

Revision ID: 0027
Revises: 0026c
"""

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026c"
branch_labels = None
depends_on = None

# Frozen here (a migration is a snapshot): old name → new name.
RENAMES = {"events.incident_case": "tasks.incident_case"}


def _rename(old: str, new: str) -> None:
    bind = op.get_bind()
    params = {"old": old, "new": new}
    # The position and the applied record: kept where the new name has none yet (it cannot have: the new code
    # starts after this migration), the old rows then removed.
    bind.execute(sa.text("UPDATE bus_cursors SET consumer = :new WHERE consumer = :old "
                         "AND NOT EXISTS (SELECT 1 FROM bus_cursors c WHERE c.consumer = :new)"), params)
    bind.execute(sa.text("DELETE FROM bus_cursors WHERE consumer = :old"), params)
    bind.execute(sa.text("UPDATE bus_processed SET consumer = :new WHERE consumer = :old AND NOT EXISTS "
                         "(SELECT 1 FROM bus_processed p WHERE p.consumer = :new AND p.event_id = bus_processed.event_id)"),
                 params)
    bind.execute(sa.text("DELETE FROM bus_processed WHERE consumer = :old"), params)
    bind.execute(sa.text("UPDATE bus_dead_letters SET consumer = :new WHERE consumer = :old"), params)


def upgrade() -> None:
    for old, new in RENAMES.items():
        _rename(old, new)


def downgrade() -> None:
    for old, new in RENAMES.items():
        _rename(new, old)
