"""Imports every capability's tables so that Base.metadata is complete (for Alembic and tests)."""

from cityops.core.audit import AuditEntry  # noqa: F401
from cityops.identity.models import Token, User  # noqa: F401
from cityops.org.models import Department, Person, Place, Unit  # noqa: F401
from cityops.base.models import Layer, LayerVersion  # noqa: F401
from cityops.housing.models import Building, Household, Resident  # noqa: F401
from cityops.sensing.models import Alarm, Datastream, Observation, Thing  # noqa: F401
