"""Platform metrics (平台指标): named, parameterised measures over CityOps data that indicators are defined on.

Each capability owns the measures over its own tables, in its own ``metrics.py`` exposing ``METRICS`` (a list of
``Metric``); this registry assembles the providers named in ``PROVIDERS`` — one declared list, read here and
nowhere else, so a catalogue never carries SQL and no capability is patched from outside.

A metric answers for a window [start, end) and many parameter sets at once (``compute(session, window,
param_sets)`` → one result per parameter set, in order). A result maps the unit of each record — its unit path,
or a unit code — to ``(numerator, denominator)`` (denominator None for plain counts and readings). The indicator
engine adds the records of a unit's subtree up (``fold = "sum"``) or takes their highest/lowest (``"max"``,
``"min"``). State measures (open cases, open alarms, risk points by level) are taken as of ``window.end``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Callable, Literal

from sqlalchemy.orm import Session

#: The capabilities that contribute metrics (their ``<module>.METRICS``).
PROVIDERS = ("cityops.events.metrics", "cityops.sensing.metrics", "cityops.warning.metrics",
             "cityops.housing.metrics", "cityops.tasks.metrics")

Result = dict[str, tuple[float, float | None]]


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Param:
    """One parameter: ``choices`` (allowed values; a list parameter takes a subset), else any ``kind`` value."""

    kind: Literal["str", "int", "float", "list"] = "str"
    choices: tuple = ()
    required: bool = False
    default: object = None


@dataclass(frozen=True)
class Metric:
    name: str
    name_zh: str
    name_en: str
    compute: Callable[[Session, Window, list[dict]], list[Result]]
    params: dict[str, Param] = field(default_factory=dict)
    fold: Literal["sum", "max", "min"] = "sum"
    #: The results carry a denominator (a rate: the indicator rolls up as the ratio of the sums).
    ratio: bool = False

    def check(self, params: dict) -> list[tuple[str, str]]:
        """Problems with ``params`` as (parameter, message); [] when they are usable."""
        problems = []
        for key in params:
            if key not in self.params:
                problems.append((key, f"metric {self.name} has no parameter {key!r} (it has: {', '.join(self.params) or 'none'})"))
        for key, spec in self.params.items():
            if key not in params:
                if spec.required:
                    problems.append((key, f"metric {self.name} needs parameter {key!r}"))
                continue
            value = params[key]
            expected = {"str": str, "int": int, "float": (int, float), "list": list}[spec.kind]
            if not isinstance(value, expected) or isinstance(value, bool):
                problems.append((key, f"{key!r} must be a {spec.kind}"))
            elif spec.choices:
                values = value if isinstance(value, list) else [value]
                bad = [v for v in values if v not in spec.choices]
                if bad:
                    problems.append((key, f"{key!r}: unknown value(s) {bad}; use {', '.join(map(str, spec.choices))}"))
        return problems

    def resolved(self, params: dict) -> dict:
        return {**{k: p.default for k, p in self.params.items() if p.default is not None}, **params}


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


def per_param_set(one: Callable[[Session, Window, dict], Result]):
    """A ``compute`` that answers each parameter set with its own query (for measures queried rarely)."""

    def compute(session: Session, window: Window, param_sets: list[dict]) -> list[Result]:
        return [one(session, window, params) for params in param_sets]

    return compute
