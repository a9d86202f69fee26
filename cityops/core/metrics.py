"""Platform metrics (平台指标): the shape of a named, parameterised measure over a capability's own data.

Each capability that owns data declares its measures in its own ``metrics.py`` (``METRICS``: a list of ``Metric``);
the indicators capability assembles them (``cityops.indicators.metrics``). This module is the seam both sides
import, so a capability contributing measures never imports the indicators package.

A metric answers for a window [start, end) and many parameter sets at once (``compute(session, window,
param_sets)`` → one result per parameter set, in order). A result maps the unit of each record — its unit path,
or a unit code — to ``(numerator, denominator)`` (denominator None for plain counts and readings). The indicator
engine adds the records of a unit's subtree up (``fold = "sum"``) or takes their highest/lowest (``"max"``,
``"min"``). State measures (open cases, open alarms, risk points by level) are taken as of ``window.end``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Literal

from sqlalchemy.orm import Session

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
    #: The facts (domain event names) after which this metric's figures may have moved: a live indicator on it is
    #: recomputed as soon as one is committed, alone (with the formulas over it), not with every live indicator.
    #: A metric no fact moves (sensor aggregates, devices online) follows the periodic live refresh.
    moved_by: tuple[str, ...] = ()

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


def per_param_set(one: Callable[[Session, Window, dict], Result]):
    """A ``compute`` that answers each parameter set with its own query (for measures queried rarely)."""

    def compute(session: Session, window: Window, param_sets: list[dict]) -> list[Result]:
        return [one(session, window, params) for params in param_sets]

    return compute
