"""事件中心 — the event center: taxonomy, duty calendar, case workflow, intake, routing, SLA, evaluation."""

from cityops.events import demo as _demo  # noqa: E402,F401  (registers the "events" demo step)
