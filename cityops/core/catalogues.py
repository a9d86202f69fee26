"""Catalogues (data files that configure a capability: taxonomies, plans, rules, levels…), validated at start-up.

Each capability declares its catalogues in its manifest (``Manifest.catalogues``): the file and the function
that loads and validates it from the Settings. ``load_all`` runs every one of them when the server (or a
command) starts; the first bad file stops it with a ``CatalogueError`` naming the file and the field, instead of
failing a request later when the catalogue is first used.

The loaders keep their own checks (pydantic models, hand-written validation raising ``ValidationFailed``,
``InvalidInput`` or ``ValueError``); this module turns whatever they raise into the one error.
"""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from cityops.core.errors import CityOpsError


class CatalogueError(RuntimeError):
    """A catalogue file failed validation: ``file``, ``field`` (its path inside the file, when known) and what is
    wrong."""

    def __init__(self, file: str, field: str | None, problem: str, line: int | None = None):
        self.file, self.field, self.problem, self.line = file, field, problem, line
        where = f"{file}:{line}" if line else file
        where = f"{where}, field {field}" if field else where
        super().__init__(f"catalogue {where}: {problem}")


@dataclass(frozen=True)
class Catalogue:
    #: The file (its name as shipped, e.g. "plans.toml"); a deployment's own copy is named in the error when used.
    file: str
    #: "module:function" returning the loaded catalogue, raising on a bad file; it is given the Settings when it
    #: has a parameter without default.
    loader: str

    def load(self, settings):
        module, _, name = self.loader.partition(":")
        fn: Callable = getattr(importlib.import_module(module), name)
        try:
            return fn(settings) if _takes_argument(fn) else fn()
        except CatalogueError:
            raise
        except Exception as exc:  # noqa: BLE001 - every kind a loader raises becomes the one error
            raise _as_catalogue_error(self.file, exc) from exc


def _takes_argument(fn) -> bool:
    """Whether the loader needs the Settings (a parameter without default) or reads its shipped file alone."""
    return any(p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               for p in inspect.signature(fn).parameters.values())


_QUOTED = re.compile(r"""(?:field|key|level|plan|role|rule|state|section|class|major|minor|device type)\s+['"]?([\w.:-]+)""")


def _as_catalogue_error(file: str, exc: Exception) -> CatalogueError:
    if isinstance(exc.__cause__, (ValidationError, tomllib.TOMLDecodeError)):  # wrapped by the loader
        exc = exc.__cause__
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        return CatalogueError(file, field, f"{first['msg']} ({len(exc.errors())} problem(s))")
    if isinstance(exc, tomllib.TOMLDecodeError):
        return CatalogueError(file, None, f"not valid TOML: {exc}")
    problems = getattr(exc, "problems", None)
    if problems and hasattr(problems[0], "field"):  # a loader's own report: file, line, field and message
        first = problems[0]
        where = str(getattr(first, "file", "") or file)
        line = getattr(first, "line", 0)
        return CatalogueError(where, first.field, f"{first.message} ({len(problems)} problem(s))",
                              line=line or None)
    if isinstance(exc, CityOpsError):
        details, field = exc.details, None
        if isinstance(details, dict):
            field = details.get("field")
        elif isinstance(details, list) and details:
            first = details[0]
            if isinstance(first, dict):
                field = first.get("field")
            elif isinstance(first, str) and ": " in first:  # "<where>: <what is wrong>"
                field = first.rsplit(": ", 1)[0]
        return CatalogueError(file, field or _field_in(exc.message), exc.message)
    if isinstance(exc, KeyError):
        return CatalogueError(file, str(exc.args[0]) if exc.args else None, "missing")
    message = str(exc)
    return CatalogueError(file, _field_in(message), message)


def _field_in(message: str) -> str | None:
    m = _QUOTED.search(message)
    return m.group(1) if m else None


def load_all(settings, only: dict[str, tuple[str, ...]] | None = None) -> dict[str, object]:
    """Load and validate every capability's catalogues (``Manifest.catalogues``); the first bad one raises
    ``CatalogueError``. Returns {file: loaded catalogue}.

    ``only`` ({capability: (file, …)}) limits the check to the catalogues a command reads: a command that
    touches one capability need not import every other one's loaders (for ``import-layer`` that was most of its
    start-up). The servers check them all."""
    import importlib

    from cityops.core.bus.manifest import manifests

    if only is None:
        chosen = [(m, None) for m in manifests().values()]
    else:
        chosen = [(importlib.import_module(f"cityops.{cap}.manifest").MANIFEST, set(files)) for cap, files in only.items()]
    loaded = {}
    for manifest, files in chosen:
        for catalogue in manifest.catalogues:
            if files is None or catalogue.file in files:
                loaded[catalogue.file] = catalogue.load(settings)
        if files is not None and (unknown := files - {c.file for c in manifest.catalogues}):
            raise ValueError(f"{manifest.capability} declares no catalogue {sorted(unknown)}")
    return loaded
