"""The registry of platform metrics: every contributing capability's ``metrics.py`` (``METRICS``), imported here
by name — one declared list (the capabilities are in the indicators manifest's ``depends_on``), read here and
nowhere else, so a catalogue never carries SQL and no capability is patched from outside. The shape of a metric
is ``cityops.core.metrics``."""

from __future__ import annotations

from functools import lru_cache

from cityops.core.metrics import Metric


class Registry:
    def __init__(self, metrics: list[Metric]):
        self.metrics: dict[str, Metric] = {}
        for metric in metrics:
            if metric.name in self.metrics:
                raise ValueError(f"metric {metric.name} is contributed twice")
            self.metrics[metric.name] = metric

    def get(self, name: str) -> Metric | None:
        return self.metrics.get(name)

    def describe(self) -> list[dict]:
        return [{"name": m.name, "name_zh": m.name_zh, "name_en": m.name_en, "fold": m.fold, "ratio": m.ratio,
                 "params": {k: {"kind": p.kind, "choices": list(p.choices), "required": p.required, "default": p.default}
                            for k, p in m.params.items()}} for m in self.metrics.values()]


def providers() -> list[list[Metric]]:
    """The metrics of each contributing capability (imported when first asked for: they read their own tables)."""
    from cityops.events.metrics import METRICS as events
    from cityops.housing.metrics import METRICS as housing
    from cityops.sensing.metrics import METRICS as sensing
    from cityops.tasks.metrics import METRICS as tasks
    from cityops.warning.metrics import METRICS as warning

    return [events, sensing, warning, housing, tasks]


@lru_cache(maxsize=1)
def registry() -> Registry:
    return Registry([metric for provided in providers() for metric in provided])
