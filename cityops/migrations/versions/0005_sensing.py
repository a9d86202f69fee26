"""Sensing: SensorThings entities, observations, rollups, alarms.

Revision ID: 0005
Revises: 0004
"""

from alembic import op
from sqlalchemy import Column, MetaData, Table, Text

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TABLES = ("sta_things", "sta_locations", "sta_thing_locations", "sta_historical_locations",
           "sta_historical_location_locations", "sta_sensors", "sta_observed_properties", "sta_datastreams",
           "sta_features", "sta_observations", "sensing_rollups", "sensing_alarms", "sensing_alarm_comments")


def _snapshot() -> MetaData:
    """A frozen copy of this revision's tables (copied from the declarations at the time of writing:
    later revisions alter them with their own operations, never by editing this one)."""
    from cityops.core.db import Base
    from cityops.sensing import models  # noqa: F401

    frozen = MetaData()
    # sta_things references units.code: a stand-in naming that column resolves the foreign key (never created here).
    Table("units", frozen, Column("code", Text, primary_key=True))
    for name in _TABLES:
        Base.metadata.tables[name].to_metadata(frozen)
    return frozen


def upgrade() -> None:
    bind = op.get_bind()
    frozen = _snapshot()
    frozen.create_all(bind, tables=[frozen.tables[n] for n in _TABLES])


def downgrade() -> None:
    bind = op.get_bind()
    frozen = _snapshot()
    frozen.drop_all(bind, tables=[frozen.tables[n] for n in _TABLES])
