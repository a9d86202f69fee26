"""The indicators' consumers on the bus (cityops.core.bus); registered by cityops/wiring.py.

A breach whose definition asks for a case (``indicator.breached`` with ``case_class``) has the event center open
it, and the breach names it; its ``indicator.recovered`` closes it. One consumer for both, so a recovery is applied
after its breach (outbox order). The event center is below indicators (the manifest's ``depends_on``).
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.bus import Envelope
from cityops.core.errors import CityOpsError
from cityops.events.actions import close_case
from cityops.events.creation import create_case
from cityops.indicators.manifest import IndicatorRecovered
from cityops.indicators.models import Breach

log = logging.getLogger("cityops.indicators")


def breach_case(session: Session, env: Envelope) -> None:
    if isinstance(env.payload, IndicatorRecovered):
        recovered(session, env)
    else:
        breached(session, env)


def breached(session: Session, env: Envelope) -> int | None:
    """``indicator.breached``: the breach's case (idempotent: a redelivery finds the breach holding it, and the
    event center files one case per ``indicator-breach:<id>``). A refused case never undoes the breach: it is
    logged and the breach stays without case."""
    e = env.payload
    b = session.get(Breach, e.breach_id)
    if e.case_class is None or b is None:
        return None
    if b.case_id is not None:
        return b.case_id
    red = f"(红色阈值 {e.red:g})" if e.red is not None else ""
    try:
        with session.begin_nested():
            case = create_case(
                session, source="indicator", class_code=e.case_class, unit_code=e.unit_code,
                title=f"{e.indicator_name}进入红色区间", external_key=f"indicator-breach:{b.id}", urgency="urgent",
                description=f"{e.indicator_name} = {e.value:g} {e.unit or ''}{red}",
                attributes={"indicator": e.indicator_code, "breach_id": b.id, "value": e.value}, actor=audit.Actor(e.actor))
    except CityOpsError as exc:  # the event center's decision, not a failure to retry
        log.warning("indicator breach %s: the event center refused the case: %s", b.id, exc.message,
                    extra={"indicator": e.indicator_code})
        return None
    b.case_id, b.case_number = case.id, case.number
    return case.id


def recovered(session: Session, env: Envelope) -> None:
    """``indicator.recovered``: the breach's case (if it has one) closes, naming the recovered value."""
    e = env.payload
    b = session.get(Breach, e.breach_id)
    if b is None or b.case_id is None:
        return
    try:
        with session.begin_nested():
            close_case(session, b.case_id, f"{e.indicator_name}已恢复({e.value:g} {e.unit or ''})", audit.Actor(e.actor))
    except CityOpsError as exc:  # already closed by hand, say: nothing to retry
        log.warning("indicator recovery: case %s not closed: %s", b.case_id, exc.message, extra={"indicator": e.indicator_code})
