"""Where the capabilities meet (集成): the bus subscriptions and the deployment's periodic jobs.

Capabilities publish typed events into the outbox in the transaction of the change (cityops.core.bus) and
never call each other here. This module only says who listens to what (``subscriptions()``), which jobs run
once per deployment (``timers()``), and builds the bus of a database (``make_bus``; the app factory starts it,
with every subscription unless ``settings.wiring`` is off, and the CLI for its commands):

- ``observation.batch_stored`` → the warning models re-evaluate the risk points the batch's datastreams feed,
  on the sensing time series (``warning.evaluate``: sensing's consumer, the warning models below it);
- ``warning.level_changed`` → the emergency plan responds (``tasks.plan_response``) and the risk point's alarm
  follows the level (``sensing.warning_alarm``);
- ``alarm.changed`` (raised or escalated at the policy's severity) → the alarm's event-center case is opened, or
  the danger's open case joined, and the alarm keeps its reference (``sensing.alarm_case``);
- ``incident.activated`` / ``incident.closed`` → the incident's case is opened (or the danger's open one joined),
  the incident keeps its reference, and the case is closed with the incident (``tasks.incident_case``);
- ``indicator.breached`` / ``indicator.recovered`` → the breach's case (when its definition asks for one) is opened
  and closed (``indicators.breach_case``);
- ``building.changed`` → the changed footprints are prepared for the dense tiles again and the building tiles
  are stale (``tiles.buildings_changed``);
- ``warning.level_changed``, ``plan.activated``, ``case.changed``, ``indicator.breached`` → notifications
  (``notify.*``: the responsible people, the plan's list and the tasks' assignees, the case's handler, the level
  above and the reporter, the indicator's owner), and ``notification.*`` → every worker's live inbox;
- ``unit.changed`` → the unit tiles are stale (``tiles.units_changed``) and every worker's locator is rebuilt
  at its next use (broadcast);
- ``alarm.changed`` → the alarm live stream of every worker (broadcast);
- ``directive.changed`` → the directive receipt boards' live streams of every worker (broadcast); the
  ``directives.sweep`` timer reminds and escalates the silent receivers once per deployment;
- ``tile_source.changed`` → every worker's tile cache re-reads its data stamps (broadcast);
- ``access.changed`` → every worker drops its cached token resolutions (broadcast);
- ``layer.version_created``, ``layer.changed`` → every worker drops its cached layer catalogue (broadcast,
  ``base.layer_catalogue``: the read paths of /ogc take layers from it);
- ``alarm.changed``, ``warning.level_changed`` → the live indicators of every worker recompute (those the fact
  moves) at once and reach the open cockpits; ``unit.changed`` → they build their unit tree again (broadcast,
  ``indicators.live``).
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from cityops.base.manifest import LayerChanged, LayerVersionCreated
from cityops.core.bus import Bus, Subscription, Timer
from cityops.directives.manifest import DirectiveChanged
from cityops.events.manifest import CaseChanged
from cityops.housing.manifest import BuildingChanged
from cityops.identity.manifest import AccessChanged
from cityops.indicators.manifest import IndicatorBreached, IndicatorRecovered
from cityops.notify.manifest import NotificationChanged, NotificationQueued
from cityops.org.manifest import UnitsChanged
from cityops.sensing.manifest import AlarmChanged, ObservationBatchStored
from cityops.tasks.manifest import IncidentActivated, IncidentClosed, PlanActivated
from cityops.tiles.manifest import TileSourceChanged
from cityops.warning.manifest import WarningLevelChanged

log = logging.getLogger("cityops.wiring")


def subscriptions(*, wired: bool = True, alarm_hub=None, inbox_hub=None, notify_wake=None, tile_service=None,
                  locator=None, directive_hub=None, indicators_live=None) -> list[Subscription]:
    """Who listens to what. ``wired=False`` (one capability alone) keeps only the live streams and the caches:
    they are each capability's own, fed by its own events."""
    from cityops.base import catalogue as layer_catalogue
    from cityops.identity import subscriptions as identity
    from cityops.indicators import subscriptions as indicators
    from cityops.sensing import subscriptions as sensing
    from cityops.notify import subscriptions as notify
    from cityops.tasks import subscriptions as tasks
    from cityops.tiles import subscriptions as tiles

    from cityops.directives import hub as directives_hub

    subs = [Subscription("identity.token_cache", (AccessChanged,), identity.token_cache, kind="broadcast"),
            Subscription("base.layer_catalogue", (LayerVersionCreated, LayerChanged), layer_catalogue.listener,
                         kind="broadcast")]
    if directive_hub is not None:
        subs.append(Subscription("directives.board_stream", (DirectiveChanged,), directives_hub.board_stream(directive_hub),
                                 kind="broadcast"))
    if alarm_hub is not None:
        subs.append(Subscription("sensing.alarm_stream", (AlarmChanged,), sensing.alarm_stream(alarm_hub), kind="broadcast"))
    if inbox_hub is not None:
        subs.append(Subscription("notify.inbox_stream", (NotificationQueued, NotificationChanged),
                                 notify.inbox_stream(inbox_hub, notify_wake or (lambda: None)), kind="broadcast"))
    if tile_service is not None:
        subs.append(Subscription("tiles.stamps", (TileSourceChanged,), tiles.stamps_listener(tile_service), kind="broadcast"))
    if locator is not None:
        subs.append(Subscription("org.locator", (UnitsChanged,), lambda _env: locator.invalidate(), kind="broadcast"))
    if indicators_live is not None:
        subs.append(Subscription("indicators.live", (AlarmChanged, WarningLevelChanged, UnitsChanged), indicators_live.poke,
                                 kind="broadcast"))
    if wired:
        subs += [
            Subscription("warning.evaluate", (ObservationBatchStored,), sensing.evaluate_fed_risk_points),
            Subscription("tasks.plan_response", (WarningLevelChanged,), tasks.plan_response),
            Subscription("sensing.warning_alarm", (WarningLevelChanged,), sensing.warning_alarm),
            # The cases the event center files for other capabilities' facts, each asked for by the consumer of the
            # capability whose fact it is (the event center is below them all): an alarm's, an incident's (opened,
            # or the danger's open case joined, and closed with it), an indicator breach's (closed on recovery).
            Subscription("sensing.alarm_case", (AlarmChanged,), sensing.alarm_case),
            Subscription("tasks.incident_case", (IncidentActivated, IncidentClosed), tasks.incident_case),
            Subscription("indicators.breach_case", (IndicatorBreached, IndicatorRecovered), indicators.breach_case),
            Subscription("tiles.buildings_changed", (BuildingChanged,), tiles.buildings_changed, ordered=False),
            # Every capability speaks: notifications of warnings, plan activations and tasks, cases, indicator breaches.
            Subscription("notify.warning", (WarningLevelChanged,), notify.warning_level),
            Subscription("notify.plan", (PlanActivated,), notify.plan_activated),
            Subscription("notify.case", (CaseChanged,), notify.case_changed),
            Subscription("notify.indicator", (IndicatorBreached,), notify.indicator_breached),
            Subscription("tiles.units_changed", (UnitsChanged,), tiles.units_changed, ordered=False),
        ]
    return subs


def timers(settings) -> list[Timer]:
    """The deployment's periodic jobs (what the CLI's ``events sweep``, ``tasks check-overdue`` and ``sensing
    maintain`` do from cron), each run once per period whatever the number of workers."""
    from datetime import timedelta

    from cityops.core import audit
    from cityops.directives import service as directives
    from cityops.events.sla import sweep
    from cityops.notify import service as notify_service
    from cityops.sensing import alarms, rules
    from cityops.tasks.incidents import ALL
    from cityops.tasks.work import check_overdue

    def sensing(session: Session) -> None:
        rules.check_no_signal(session)
        alarms.escalate_overdue(session)

    jobs = [("events.sweep", settings.timer_events_sweep_seconds, lambda session: sweep(session, None)),
            ("tasks.overdue", settings.timer_tasks_overdue_seconds,
             lambda session: check_overdue(session, audit.Actor("timer"), ALL, escalate_after=timedelta(minutes=30))),
            ("sensing.maintain", settings.timer_sensing_seconds, sensing),
            # The silent receivers of directives are reminded, then escalated to the leader on duty above.
            ("directives.sweep", settings.timer_directives_seconds, lambda session: directives.sweep(session)),
            # Messages nobody acknowledged go to their policy's next step (new deliveries wake the dispatcher
            # through notification.queued).
            ("notify.escalate", settings.timer_notify_escalate_seconds, lambda session: notify_service.escalate_due(session))]
    return [Timer(name, seconds, job) for name, seconds, job in jobs if seconds > 0]


def make_bus(engine, settings, registry=None, *, alarm_hub=None, inbox_hub=None, notify_wake=None, tile_service=None,
             locator=None, with_timers: bool = False, directive_hub=None, indicators_live=None) -> Bus:
    """The bus of the database behind ``engine`` with its subscriptions (not started); a server's bus
    (``with_timers``, wired) also runs the deployment's periodic jobs."""
    bus = Bus(engine, settings, registry=registry)
    for sub in subscriptions(wired=settings.wiring, alarm_hub=alarm_hub, inbox_hub=inbox_hub, notify_wake=notify_wake,
                             tile_service=tile_service, locator=locator, directive_hub=directive_hub,
                             indicators_live=indicators_live):
        bus.subscribe(sub)
    if with_timers and settings.wiring:
        for timer in timers(settings):
            bus.every(timer)
    return bus
