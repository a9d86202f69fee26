"""Every numeric threshold of a model lives in a catalogue (with its source), not in code.

The modules that apply models — the warning models, indicators, evaluation and CAP, and the sensing rule
engine — are parsed and every number literal in them is checked against a small allow-list: mathematical
identities and unit conversions. Any other number there is a model constant that belongs in
``warning/catalogue.toml`` or ``sensing/rules.toml``. Every other module of the two packages is listed below
with the reason it holds no model threshold, so a new module must be classified before the suite passes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cityops

ROOT = Path(cityops.__file__).parent
PACKAGES = ("warning", "sensing")

#: Modules that apply a model: scanned.
MODEL_CODE = {
    "warning/models/__init__.py", "warning/models/antecedent.py", "warning/models/calibration.py",
    "warning/models/displacement.py", "warning/models/grading.py", "warning/models/house.py",
    "warning/models/levels.py", "warning/models/logistic.py", "warning/models/rainfall.py", "warning/models/skill.py",
    "warning/indicators.py", "warning/service.py", "warning/cap.py",
    "sensing/rules.py",
}
#: Modules that apply no model, and why their numbers are not model thresholds.
NOT_MODEL_CODE = {
    "warning/__init__.py": "package marker",
    "warning/catalogue.py": "the catalogue loader: its numbers are the schema's bounds (what a value can mean at "
                            "all) and the unit definitions of the velocity-class table",
    "warning/routes.py": "HTTP routes: page sizes and request bounds",
    "warning/tables.py": "table definitions: column defaults",
    "warning/demo.py": "the demo district's synthetic July storm: data, not thresholds",
    "warning/manifest.py": "the events it publishes: payload types",
    "warning/schemas.py": "the API's response models: shapes, not thresholds",
    "warning/metrics.py": "the metrics it contributes to the indicators: definitions, not thresholds",
    "sensing/__init__.py": "package marker",
    "sensing/catalog.py": "the loader of rules.toml and device_types.toml: schema bounds",
    "sensing/alarms.py": "the alarm life cycle and live stream: queue and text bounds, policy from rules.toml",
    "sensing/demo.py": "the demo devices and their quiet-day readings: data",
    "sensing/simulate.py": "the storm simulator: synthetic data",
    "sensing/escalation.py": "the call into the event center",
    "sensing/ingest.py": "ingest queue, batching and validation against device_types.toml ranges",
    "sensing/models.py": "table definitions",
    "sensing/mqtt.py": "the MQTT bridge: protocol settings",
    "sensing/routes.py": "HTTP routes: page sizes and request bounds",
    "sensing/service.py": "wiring of the sensing services",
    "sensing/sta.py": "OGC SensorThings entities and query options",
    "sensing/sta_routes.py": "OGC SensorThings routes",
    "sensing/timeseries.py": "rollup buckets and downsampling",
    "sensing/timeutil.py": "time conversions",
    "sensing/manifest.py": "the events it publishes and consumes: payload types",
    "sensing/metrics.py": "the metrics it contributes to the indicators: definitions, not thresholds",
    "sensing/subscriptions.py": "bus consumers: the warning level's alarm, the live stream",
}
#: Mathematical identities: zero, one, two (a square, a two-point difference, √2), a half.
IDENTITIES = {0, 1, 2, 0.5}
#: Unit conversions: hours per day, minutes per hour (seconds per minute), percent, milli, seconds per hour,
#: seconds per day, milliseconds per minute and per hour.
UNITS = {24, 60, 100, 1000, 3600, 86400, 60_000, 3_600_000}
#: Parameters whose defaults are page sizes of a listing, not quantities of a model.
PAGING = {"limit", "offset", "history"}


def _python_files() -> set[str]:
    return {str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _exempt_nodes(tree: ast.AST) -> set[int]:
    """Literals that are not quantities: docstrings, round()'s digits, the base of a power of ten, and the
    default page sizes of listings."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            positional = node.args.posonlyargs + node.args.args
            pairs = list(zip(positional[len(positional) - len(node.args.defaults):], node.args.defaults))
            pairs += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None]
            skip |= {id(d) for a, d in pairs if a.arg in PAGING and isinstance(d, ast.Constant)}
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "round" and len(node.args) == 2:
            skip.add(id(node.args[1]))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and isinstance(node.left, ast.Constant) \
                and node.left.value == 10:
            skip.add(id(node.left))
    return skip


def model_literals(path: Path) -> list[tuple[int, object, str]]:
    """(line, value, source line) of every number in a module that is neither an identity nor a unit."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    skip = _exempt_nodes(tree)
    lines = source.splitlines()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float) and id(node) not in skip:
            if node.value not in IDENTITIES and node.value not in UNITS:
                found.append((node.lineno, node.value, lines[node.lineno - 1].strip()))
    return sorted(found, key=lambda f: f[0])


def test_every_module_is_classified():
    files = _python_files()
    assert not files - MODEL_CODE - set(NOT_MODEL_CODE), "classify these modules: model code or not (and why)"
    assert not (MODEL_CODE | set(NOT_MODEL_CODE)) - files, "listed modules that no longer exist"


@pytest.mark.parametrize("module", sorted(MODEL_CODE))
def test_no_model_threshold_in_code(module):
    found = model_literals(ROOT / module)
    assert not found, f"{module}: numbers that belong in a catalogue (with their source): " + "; ".join(
        f"line {line}: {value!r} in `{text}`" for line, value, text in found)


def test_the_scan_finds_a_threshold(tmp_path):
    """The scan itself can fail: a threshold written in code is reported, identities and units are not."""
    sample = tmp_path / "sample.py"
    sample.write_text('"""doc 42"""\n\ndef f(v, t, limit=500, window=30):\n    """85 degrees"""\n    days = t / 86400\n'
                      '    return round(v * 100, 3) > 85.0 or 10 ** v > 2 * days\n', encoding="utf-8")
    assert [(line, value) for line, value, _ in model_literals(sample)] == [(3, 30), (6, 85.0)]
