"""Imports every capability's tables so that Base.metadata is complete (for Alembic and tests), and every demo
step (for the demo generator)."""

from cityops.core.audit import AuditEntry  # noqa: F401
from cityops.core.bus.models import Cursor, DeadLetter, Lease, OutboxEvent, Processed  # noqa: F401
from cityops.identity.models import LoginThrottle, Token, User  # noqa: F401
from cityops.org.models import Department, Person, Place, Unit  # noqa: F401
from cityops.base.models import Layer, LayerVersion  # noqa: F401
from cityops.housing.models import Building, Household, Resident  # noqa: F401
from cityops.warning.tables import RiskPoint, RiskWarning, StoredObservation  # noqa: F401
from cityops.tiles.models import TileSource  # noqa: F401
from cityops.tasks.models import Evacuation, EvacuationEvent, Incident, IncidentLog, RiskZone, Shelter, Task  # noqa: F401
from cityops.events.models import Attachment, Case, Outbox, Transition  # noqa: F401
from cityops.sensing.models import Alarm, Datastream, Observation, Thing  # noqa: F401
from cityops.indicators.models import Breach, Change, DefinitionVersion, Digest, Report, Value  # noqa: F401
from cityops.notify.models import Delivery, Message, Preference, PushSubscription, Recipient, TimelineEntry  # noqa: F401
from cityops.video.models import Camera  # noqa: F401
from cityops.calls.models import CallLog  # noqa: F401
from cityops.duty.models import DutyAssignment, DutyHandover  # noqa: F401
from cityops.directives.models import Directive, LogEntry, Receipt  # noqa: F401
# Every capability's demo steps (each module registers its own on import, in this order,
# which is the steps' order: the same seed builds the same district; the packages themselves do not import
# them, so a command that needs one capability does not load every demo's dependencies).
from cityops.housing import demo as _housing_demo  # noqa: E402,F401
from cityops.tiles import demo as _tiles_demo  # noqa: E402,F401
from cityops.notify import demo as _notify_demo  # noqa: E402,F401
from cityops.duty import demo as _duty_demo  # noqa: E402,F401
from cityops.base import demo as _base_demo  # noqa: E402,F401
from cityops.base import basemap as _basemap_demo  # noqa: E402,F401
from cityops.warning import demo as _warning_demo  # noqa: E402,F401
from cityops.video import demo as _video_demo  # noqa: E402,F401
from cityops.sensing import demo as _sensing_demo  # noqa: E402,F401
from cityops.tasks import demo as _tasks_demo  # noqa: E402,F401
from cityops.events import demo as _events_demo  # noqa: E402,F401
from cityops.indicators import demo as _indicators_demo  # noqa: E402,F401
import cityops.demo.link_sensors  # noqa: E402,F401  (last: it links the risk points to the sensors made above)
