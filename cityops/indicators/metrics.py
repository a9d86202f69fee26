"""The registry of platform metrics: every capability's ``metrics.py`` (``METRICS``), as named in ``PROVIDERS`` — one
declared list, read here and nowhere else, so a catalogue never carries SQL and no capability is patched from
outside. The shape of a metric is ``cityops.core.metrics``."""

from __future__ import annotations

import importlib
from functools import lru_cache

from cityops.core.metrics import Metric

#: The capabilities that contribute metrics (their ``<module>.METRICS``).
PROVIDERS = ("cityops.events.metrics", "cityops.sensing.metrics", "cityops.warning.metrics",
             "cityops.housing.metrics", "cityops.tasks.metrics")


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


@lru_cache(maxsize=1)
def registry() -> Registry:
    metrics: list[Metric] = []
    for module in PROVIDERS:
        metrics.extend(importlib.import_module(module).METRICS)
    return Registry(metrics)
