"""事件中心 — the event center: taxonomy, duty calendar, case workflow, intake, routing, SLA, evaluation."""
