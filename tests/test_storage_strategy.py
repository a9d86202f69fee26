"""Backend differences live in the storage strategy (cityops/core/storage.py): domain code asks
``storage_of(session)`` for the operation it needs and never branches on the database's name. This test parses
every module outside cityops/core and fails on a look at the dialect's name (``….dialect.name``) or a comparison
with a backend's name ("postgresql", "sqlite").

Alembic revisions (cityops/migrations) are DDL written for each backend and run once; they are not domain code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cityops

ROOT = Path(cityops.__file__).parent
#: Where looking at the backend's name is the job.
EXEMPT = {"core": "the storage strategy, engines, geometry types and spatial DDL",
          "migrations": "Alembic revisions: each backend's DDL, run once"}
BACKENDS = {"postgresql", "sqlite", "postgres"}


def _backend_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.lower() in BACKENDS
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_backend_literal(e) for e in node.elts)
    return False


def dialect_branches(root: Path) -> list[str]:
    """Every place in ``root`` (outside the exempt packages) that reads the dialect's name or compares a value with
    a backend's name, as 'file:line what'."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in EXEMPT:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr == "name" and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "dialect"):
                problems.append(f"{rel}:{node.lineno} reads the dialect's name")
            elif isinstance(node, ast.Compare) and any(_backend_literal(n) for n in [node.left, *node.comparators]):
                problems.append(f"{rel}:{node.lineno} compares with a backend's name")
    return sorted(problems, key=lambda p: (p.split(' ')[0].rsplit(':', 1)[0], int(p.split(' ')[0].rsplit(':', 1)[1]), p))


def test_domain_code_never_branches_on_the_backend():
    assert dialect_branches(ROOT) == []


def test_a_dialect_branch_fails(tmp_path):
    """The check itself: each way of asking which backend this is gets reported; asking the strategy does not."""
    (tmp_path / "ogc").mkdir()
    (tmp_path / "core").mkdir()
    (tmp_path / "ogc" / "a.py").write_text(
        "def f(session, conn, dialect, storage):\n"
        "    pg = session.get_bind().dialect.name == 'postgresql'\n"
        "    if dialect == \"sqlite\":\n"
        "        pass\n"
        "    if conn.dialect.name in ('postgresql',):\n"
        "        pass\n"
        "    return storage.name != 'sqlite'\n", encoding="utf-8")
    (tmp_path / "ogc" / "b.py").write_text(
        "from cityops.core.storage import storage_of\n"
        "def g(session, column):\n"
        "    return storage_of(session).json_text(column)\n", encoding="utf-8")
    (tmp_path / "core" / "storage.py").write_text("def s(bind):\n    return bind.dialect.name == 'sqlite'\n",
                                                  encoding="utf-8")
    assert dialect_branches(tmp_path) == [
        "ogc/a.py:2 compares with a backend's name",
        "ogc/a.py:2 reads the dialect's name",
        "ogc/a.py:3 compares with a backend's name",
        "ogc/a.py:5 compares with a backend's name",
        "ogc/a.py:5 reads the dialect's name",
        "ogc/a.py:7 compares with a backend's name",
    ]
