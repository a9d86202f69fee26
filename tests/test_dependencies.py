"""Each capability imports only what its manifest allows (cityops/<capability>/manifest.py): cityops.core, its
own package, the manifests (event types) of the events it consumes, and the capabilities named in
``depends_on``; no capability loads another through ``importlib``; and the dependencies — declared, and those
consuming an event makes (a consumer imports the publisher's event types) — have no cycle, so two capabilities
never answer each other's events (the one below is called by the consumer of the one above). Demo steps
(modules that ``register_step``) build the demo district from several capabilities, as cityops/wiring.py
assembles them: they are not held to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cityops
from cityops.core.bus.manifest import CAPABILITIES, Manifest, manifests

ROOT = Path(cityops.__file__).parent
#: Infrastructure every capability may use besides core: the demo generator's step registry.
SHARED = {"core", "demo"}
#: Contract modules any capability may import, like the event types: what it contributes to another capability.
CONTRACTS = {"cityops.indicators.metrics": "the metric definitions each capability contributes to the indicators"}
#: Known cycles, each with why it is still there (remove the entry when it is broken).
KNOWN_CYCLES = {
    frozenset({"org", "identity"}): "identity.scope (materialised-path scope) is used by org's services and "
                                    "identity reads org's units; the scope belongs in core",
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, node.module)]
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def forbidden_imports(root: Path, declared: dict[str, Manifest]) -> list[str]:
    """Every import of one capability by another that its manifest does not allow, as 'file:line module'."""
    problems = []
    for cap, manifest in declared.items():
        allowed_modules = {f"cityops.{e.__module__.split('.')[1]}.manifest" for e in manifest.consumes}
        allowed = SHARED | {cap} | set(manifest.depends_on)
        for path in sorted((root / cap).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if "register_step(" in text:
                continue
            for line, module in _imports(path):
                parts = module.split(".")
                if parts[0] != "cityops" or len(parts) < 2:
                    continue
                target = parts[1]
                if (target in allowed or module in allowed_modules or ".".join(parts[:3]) in allowed_modules
                        or ".".join(parts[:3]) in CONTRACTS):
                    continue
                if target in CAPABILITIES or target in {"wiring", "app", "cli", "models"}:
                    problems.append(f"{path.relative_to(root)}:{line} imports {module}")
    return sorted(set(problems))


def dynamic_imports(root: Path, caps) -> list[str]:
    """Every ``importlib.import_module`` / ``__import__`` call in a capability, as 'file:line': a capability is
    reached by a plain import (which the checks above see), never by name at run time."""
    problems = []
    for cap in caps:
        for path in sorted((root / cap).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call):
                    fn = node.func
                    name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else None
                    if name in ("import_module", "__import__"):
                        problems.append(f"{path.relative_to(root)}:{node.lineno}")
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                    if "importlib" in names and not (isinstance(node, ast.ImportFrom) and node.module == "importlib.metadata"):
                        problems.append(f"{path.relative_to(root)}:{node.lineno}")
    return sorted(set(problems))


def edges(declared: dict[str, Manifest]) -> dict[str, set[str]]:
    """Who depends on whom: ``depends_on``, and the publisher of every event a capability consumes."""
    return {cap: (set(m.depends_on) | {e.__module__.split(".")[1] for e in m.consumes}) - {cap}
            for cap, m in declared.items()}


def cycles(declared: dict[str, Manifest]) -> list[list[str]]:
    graph = edges(declared)
    found = []

    def walk(node, stack):
        for nxt in graph.get(node, ()):
            if nxt in stack:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif len(stack) < len(graph):
                walk(nxt, stack + [nxt])

    for cap in graph:
        walk(cap, [cap])
    return [c for c in found if frozenset(c) not in KNOWN_CYCLES]


def test_every_capability_has_a_manifest_and_imports_only_what_it_declares():
    declared = manifests()
    assert set(declared) == set(CAPABILITIES)
    assert forbidden_imports(ROOT, declared) == []


def test_declared_dependencies_have_no_cycle():
    assert cycles(manifests()) == []


def test_no_capability_is_loaded_by_name():
    assert dynamic_imports(ROOT, CAPABILITIES) == []


def test_the_event_center_is_below_the_capabilities_whose_facts_open_cases():
    """An alarm's, an incident's and an indicator breach's cases are asked for by consumers in sensing, tasks and
    indicators; the event center imports none of them (not even their event types)."""
    graph = edges(manifests())
    assert {"sensing", "tasks", "indicators"} & graph["events"] == set()
    assert all("events" in graph[cap] for cap in ("sensing", "tasks", "indicators"))


def test_every_consumed_event_is_published_by_someone():
    declared = manifests()
    published = set().union(*(m.published_names for m in declared.values()))
    for cap, m in declared.items():
        assert m.consumed_names <= published, cap


def test_a_forbidden_import_fails(tmp_path):
    """The check itself: a capability importing another's service without declaring it is reported; importing
    the event types it consumes is not."""
    from cityops.warning.manifest import WarningLevelChanged

    (tmp_path / "tasks").mkdir()
    (tmp_path / "events").mkdir()
    (tmp_path / "tasks" / "plans.py").write_text(
        "from cityops.core import audit\nfrom cityops.warning.manifest import WarningLevelChanged\n"
        "from cityops.warning import service\n", encoding="utf-8")
    (tmp_path / "events" / "x.py").write_text("import cityops.tasks.service\n", encoding="utf-8")
    declared = {"tasks": Manifest("tasks", consumes=(WarningLevelChanged,)), "events": Manifest("events")}
    assert forbidden_imports(tmp_path, declared) == [
        "events/x.py:1 imports cityops.tasks.service",
        "tasks/plans.py:3 imports cityops.warning",
        "tasks/plans.py:3 imports cityops.warning.service",
    ]
    assert cycles({"tasks": Manifest("tasks", depends_on=("events",)), "events": Manifest("events", depends_on=("tasks",))})


def test_manifests_answering_each_other_fail(tmp_path):
    """Two capabilities consuming each other's events import each other's manifests: a cycle, reported even though
    neither names the other in ``depends_on``; and a manifest importing another's event types without consuming
    them is a forbidden import."""
    from cityops.events.manifest import CaseChanged
    from cityops.tasks.manifest import IncidentActivated

    answering = {"tasks": Manifest("tasks", consumes=(CaseChanged,)), "events": Manifest("events", consumes=(IncidentActivated,))}
    assert cycles(answering) in ([["tasks", "events", "tasks"], ["events", "tasks", "events"]],
                                 [["events", "tasks", "events"], ["tasks", "events", "tasks"]])
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "manifest.py").write_text("from cityops.tasks.manifest import IncidentClosed  # noqa: E402\n",
                                                     encoding="utf-8")
    assert forbidden_imports(tmp_path, {"events": Manifest("events")}) == [
        "events/manifest.py:1 imports cityops.tasks.manifest",
        "events/manifest.py:1 imports cityops.tasks.manifest.IncidentClosed",
    ]


def test_a_capability_loaded_by_name_fails(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "links.py").write_text(
        "import importlib\n\n\ndef f():\n    return importlib.import_module('cityops.events.service')\n", encoding="utf-8")
    assert dynamic_imports(tmp_path, ["tasks"]) == ["tasks/links.py:1", "tasks/links.py:5"]


def test_wiring_only_registers():
    """cityops/wiring.py says who listens to what and which jobs run once per deployment, and builds the bus: no
    consumer, adapter or demo step of its own (those live in their capability)."""
    tree = ast.parse((ROOT / "wiring.py").read_text(encoding="utf-8"))
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert defined == {"subscriptions", "timers", "make_bus"}
