"""Simulated grid workers for the live demo (演示): while a response is active, households of its zone are
confirmed one by one, as their workers would report them from the phone page, so that a visitor watches the
command view's households turn safe.

Most go to relatives or move out on their own; now and then nobody is home. A share is left to move (by
default 30 %): those are for the visitor, logged in as 老沟湾's grid worker, to confirm on the phone page.
Each change goes through ``evacuation.change_state`` under a request key, so a restart never counts one twice.
"""

from __future__ import annotations

import logging
import math
import random
import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cityops.core import audit
from cityops.core.errors import CityOpsError
from cityops.tasks import evacuation, incidents
from cityops.tasks.models import Evacuation, Incident

log = logging.getLogger("cityops.tasks.simulate")
#: The actor of the simulated reports (the web app names it 网格员（模拟）).
ACTOR = audit.Actor("demo:worker")
_STATES = (("moved", 0.6), ("with_relatives", 0.3), ("not_home", 0.1))


def confirm_one(session: Session, rng: random.Random, leave: float = 0.3) -> dict | None:
    """Confirm the next household of an active, real (not drill) response, unless only ``leave`` of its
    households are left to move; returns what changed, or None when nothing is due. The caller commits."""
    for incident_id in session.scalars(select(Incident.id).where(Incident.status == "active", Incident.drill.is_(False))
                                       .order_by(Incident.id)):
        in_zone = (Evacuation.incident_id == incident_id, Evacuation.in_zone.is_(True))
        total = session.scalar(select(func.count(Evacuation.id)).where(*in_zone)) or 0
        waiting = list(session.scalars(select(Evacuation).where(*in_zone, Evacuation.state == "to_move")
                                       .order_by(Evacuation.id)))
        if not waiting or len(waiting) <= math.floor(total * leave):
            continue
        ev = waiting[0]
        state = rng.choices([s for s, _ in _STATES], [w for _, w in _STATES])[0]
        evacuation.change_state(session, ACTOR, incidents.ALL, ev.id, state=state, lon=ev.lon, lat=ev.lat,
                             note="演示:模拟网格员上报", request_key=f"demo-worker-{ev.id}")
        return {"incident_id": incident_id, "household": ev.household_code, "state": state}
    return None


def run_workers(sessions: sessionmaker[Session], *, every_s: float = 4.0, leave: float = 0.3, seed: int = 20260723,
                stop: threading.Event | None = None) -> None:
    """Confirm a household every ``every_s`` seconds for as long as the demo serves (until ``stop``)."""
    rng = random.Random(seed)
    stop = stop or threading.Event()
    while not stop.wait(every_s):
        try:
            with sessions() as session:
                done = confirm_one(session, rng, leave)
                session.commit()
            if done:
                log.info("simulated worker report", extra=done)
        except CityOpsError as exc:  # a household changed meanwhile, the response stood down: the next one
            log.info("simulated worker report refused: %s", exc.message)
