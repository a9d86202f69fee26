"""OGC API – Features Part 3 (Filtering) with CQL2: parsing, queryables, and translation to SQL that gives the
same answer on both backends.

Parsing is done by the ``cql2`` library (both encodings); a text filter is turned into CQL2-JSON and one
translator walks that tree. The translator is ours because no library emits SQL for *both* PostGIS and a
GeoPackage on SQLite over our schema (properties in one JSON column; no SpatiaLite).

Semantics kept identical on both backends:

* a property compares only with values of the literal's JSON type (a number property holding ``"abc"``
  never matches ``n > 3`` on either side — PostgreSQL's jsonb and SQLite order mixed types differently);
* strings compare by code point (``COLLATE "C"`` on PostgreSQL, SQLite's BINARY); ``LIKE`` is case
  sensitive (SQLite's LIKE is not, so it becomes GLOB there); ``CASEI`` lower-cases both sides;
* spatial operators are evaluated by GEOS on both ends (PostGIS functions; on SQLite a Shapely function
  registered on the connection), after the spatial index narrows the candidates;
* temporal operators compare RFC 3339 strings, so datetime properties must be stored as UTC ISO 8601
  with an explicit offset, ``+00:00`` (what our importers write); dates compare as ``YYYY-MM-DD``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

import cql2
import numpy as np
import shapely
from sqlalchemy import LargeBinary, and_, bindparam, case, false, func, literal, not_, or_, true
from sqlalchemy.sql.elements import ColumnElement

from cityops.core.crs import to_canonical_xy
from cityops.core.errors import CityOpsError, InvalidInput
from cityops.core.geojson import read_geometry
from cityops.core.geometry import CANONICAL_SRID, from_gpkg
from cityops.core.params import parse_int
from cityops.core.storage import Storage, storage_of

#: Names that denote the feature geometry in a filter (QGIS uses the queryable's name; others say geometry).
GEOMETRY_NAMES = ("geometry", "geom")
FILTER_LANGS = ("cql2-text", "cql2-json")
#: Pre-standard names of the encodings, still sent by clients: GDAL's OAPIF driver asks with filter-lang=cql-text.
FILTER_LANG_SYNONYMS = {"cql-text": "cql2-text", "cql-json": "cql2-json"}
#: Bounds of a filter, checked before the ``cql2`` parser sees it: that parser recurses natively per level and
#: crashes the whole process (SIGSEGV) at about 1,700 nested parentheses. Real filters nest a few levels.
MAX_FILTER_CHARS = 100_000
MAX_FILTER_DEPTH = 64  # nested parentheses (cql2-text) or predicates (cql2-json, where a level is {…[…]})
#: Predicates joined by AND/OR/NOT (an IN list counts once): SQLite refuses expressions deeper than 1,000.
MAX_FILTER_PREDICATES = 500
MAX_IN_VALUES = 10_000

_JSON_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean",
               "datetime": "string", "date": "string", "json": None}


class FilterError(CityOpsError):
    """A filter that cannot be parsed or applied (HTTP 400, naming the position or the property)."""

    status_code = 400
    code = "InvalidParameterValue"


def queryables(layer, url: str) -> dict:
    """The layer's queryables as a JSON Schema (2020-12) document: every attribute and the geometry."""
    props: dict[str, dict] = {
        "geometry": {"title": "geometry", "description": "the feature geometry (also accepted as 'geom')",
                     "format": f"geometry-{_geometry_format(layer.geometry_type)}",
                     "x-ogc-role": "primary-geometry"},
    }
    for f in layer.attribute_schema or []:
        entry: dict = {"title": f["name"]}
        kind = f.get("type", "string")
        if kind == "datetime":
            entry.update(type="string", format="date-time")
        elif kind == "date":
            entry.update(type="string", format="date")
        elif _JSON_TYPES.get(kind):
            entry["type"] = _JSON_TYPES[kind]
        props[f["name"]] = entry
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": url, "type": "object",
            "title": layer.title_zh, "properties": props, "additionalProperties": False}


def has_temporal(attribute_schema) -> bool:
    """The collection has a date or date-time queryable (what the temporal operators compare)."""
    return any(f.get("type") in ("datetime", "date") for f in attribute_schema or [])


def _geometry_format(geometry_type: str) -> str:
    return {"POINT": "point", "MULTIPOINT": "multipoint", "LINESTRING": "linestring",
            "MULTILINESTRING": "multilinestring", "POLYGON": "polygon", "MULTIPOLYGON": "multipolygon"}.get(
        geometry_type.upper(), "any")


_POSITION = re.compile(r"-->\s*(\d+):(\d+)")


def parse(text: str, lang: str | None) -> dict:
    """``filter`` + ``filter-lang`` → CQL2-JSON (a dict). 400 with the line and column of a syntax error."""
    lang = FILTER_LANG_SYNONYMS.get(lang, lang) if lang else "cql2-text"
    if lang not in FILTER_LANGS:
        raise FilterError(f"filter-lang={lang!r} is not supported; use cql2-text or cql2-json")
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"filter is longer than {MAX_FILTER_CHARS} characters")
    if not text.strip():
        raise FilterError("filter is empty")
    _check_nesting(text, lang)
    try:
        expr = cql2.parse_text(text) if lang == "cql2-text" else cql2.parse_json(text)
        tree = expr.to_json()
    except (cql2.ParseError, ValueError) as exc:
        raw = str(exc)
        found = _POSITION.search(raw)
        details = None
        if found:
            line, column = int(found.group(1)), int(found.group(2))
            details = {"line": line, "column": column}
            expected = raw.strip().splitlines()[-1].lstrip(" =") if "expected" in raw else "a valid expression"
            message = f"filter ({lang}) is invalid at line {line}, column {column}: {expected}"
        elif lang == "cql2-json":
            try:
                json.loads(text)
                message = f"filter (cql2-json) is not a valid CQL2 JSON expression: {raw}"
            except json.JSONDecodeError as jexc:
                details = {"line": jexc.lineno, "column": jexc.colno}
                message = f"filter (cql2-json) is not valid JSON at line {jexc.lineno}, column {jexc.colno}: {jexc.msg}"
        else:
            message = f"filter ({lang}) is invalid: {raw}"
        raise FilterError(message, details=details) from None
    _check_size(tree)
    _exact_geometries(tree, text, lang)
    return tree


_WKT_TAG = re.compile(r"\b(MULTIPOINT|MULTILINESTRING|MULTIPOLYGON|GEOMETRYCOLLECTION|POINT|LINESTRING|POLYGON)\b"
                      r"(?:\s+Z)?\s*\(", re.I)


def _exact_geometries(tree, text: str, lang: str) -> None:
    """Put back the exact coordinates of the filter's geometry literals. The ``cql2`` library (0.6) rounds them
    in the last bits on the way through its geometry types (108.41234567891235 comes out as 108.41234567891236),
    so a point written with a returned feature's coordinates missed that feature. The literals are read again
    from the filter itself — WKT by GEOS, JSON by the JSON parser, both exact — and replace the library's, in
    order (both lists follow the text)."""
    found: list[dict] = []
    stack = [tree]
    while stack:  # depth first, left to right: the order the literals appear in the text
        node = stack.pop()
        if isinstance(node, dict):
            if "coordinates" in node or "geometries" in node:
                found.append(node)
                continue
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    if not found:
        return
    if lang == "cql2-json":
        exact, stack = [], [json.loads(text)]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if "coordinates" in node or "geometries" in node:
                    exact.append(node)
                    continue
                stack.extend(reversed(list(node.values())))
            elif isinstance(node, list):
                stack.extend(reversed(node))
    else:
        bare = _QUOTED[lang].sub(lambda m: " " * len(m.group(0)), text)  # no tag inside a string literal counts
        exact, tag = [], _WKT_TAG.search(bare)
        while tag:
            depth, end = 0, tag.end() - 1
            for end in range(tag.end() - 1, len(bare)):
                depth += {"(": 1, ")": -1}.get(bare[end], 0)
                if depth == 0:
                    break
            try:
                exact.append(json.loads(shapely.to_geojson(shapely.from_wkt(text[tag.start():end + 1]))))
            except shapely.errors.GEOSException:
                return
            tag = _WKT_TAG.search(bare, end + 1)  # past the whole literal (a collection's members are in it)
    if len(exact) != len(found):
        return  # not the same literals: keep the library's reading
    for ours, theirs in zip(found, exact):
        ours.clear()
        ours.update(theirs)


#: Quoted strings of each encoding (their brackets do not nest anything); an unterminated one runs to the end.
_QUOTED = {"cql2-text": re.compile(r"'(?:[^']|'')*(?:'|$)|\"[^\"]*(?:\"|$)"),
           "cql2-json": re.compile(r'"(?:[^"\\]|\\.)*(?:"|$)')}
_OPENING = {"cql2-text": ("(", ")"), "cql2-json": ("{[", "}]")}


def _check_nesting(text: str, lang: str) -> None:
    """Refuse a filter nested deeper than the parser can take, in one pass over the text, before parsing."""
    bare = _QUOTED[lang].sub("", text)
    opening, closing = _OPENING[lang]
    steps = np.zeros(len(bare), dtype=np.int32)
    chars = np.frombuffer(bare.encode("utf-32-le"), dtype=np.uint32)
    for c in opening:
        steps[chars == ord(c)] = 1
    for c in closing:
        steps[chars == ord(c)] = -1
    depth = int(np.cumsum(steps).max(initial=0))
    # cql2-json spends two brackets per level ({"op", "args": [...]}) and one on the outer object.
    allowed = MAX_FILTER_DEPTH if lang == "cql2-text" else 2 * MAX_FILTER_DEPTH + 1
    if depth > allowed:
        raise FilterError(f"filter ({lang}) nests {depth} levels of {'parentheses' if lang == 'cql2-text' else 'brackets'}; "
                          f"at most {allowed} are accepted", details={"depth": depth, "max_depth": allowed})


def _check_size(tree) -> None:
    """Count the predicates joined by AND/OR/NOT and the values of IN lists (without recursion)."""
    predicates, stack = 0, [tree]
    while stack:
        node = stack.pop()
        op = node.get("op", "").lower() if isinstance(node, dict) else ""
        if op in ("and", "or", "not"):
            stack.extend(node.get("args", []))
            continue
        predicates += 1
        if op == "in" and isinstance(node.get("args"), list) and len(node["args"]) == 2 \
                and isinstance(node["args"][1], list) and len(node["args"][1]) > MAX_IN_VALUES:
            raise FilterError(f"IN lists {len(node['args'][1])} values; at most {MAX_IN_VALUES} are accepted",
                              details={"values": len(node["args"][1]), "max_values": MAX_IN_VALUES})
    if predicates > MAX_FILTER_PREDICATES:
        raise FilterError(f"filter joins {predicates} predicates with AND/OR/NOT; at most {MAX_FILTER_PREDICATES} are "
                          "accepted (use IN for a list of values)",
                          details={"predicates": predicates, "max_predicates": MAX_FILTER_PREDICATES})


def query_parameter_names(layer, reserved: tuple[str, ...]) -> tuple[str, ...]:
    """Queryables usable as ``?name=value`` (Part 3 queryables-query-parameters): every attribute whose name
    is not one of the operation's own parameters (those stay reachable through ``filter``)."""
    return tuple(f["name"] for f in layer.attribute_schema or [] if f["name"] not in reserved)


def equality_filter(layer, params, names: tuple[str, ...]) -> dict | None:
    """``?kind=a&n=3`` → the CQL2-JSON ``kind = 'a' AND n = 3``, each value read as its queryable's type."""
    kinds = {f["name"]: f.get("type", "string") for f in layer.attribute_schema or []}
    args = []
    for name in names:
        raw = params.get(name)
        if raw is None:
            continue
        kind = kinds[name]
        try:
            if kind == "integer":
                value = parse_int(raw, name)
            elif kind == "number":
                value = float(raw)
            elif kind == "boolean":
                if raw not in ("true", "false"):
                    raise ValueError
                value = raw == "true"
            elif kind == "datetime":
                value = {"timestamp": raw}
            elif kind == "date":
                value = {"date": raw}
            else:
                value = raw
        except (ValueError, InvalidInput):
            raise FilterError(f"{name}={raw!r} is not a valid {kind}", details={"property": name}) from None
        args.append({"op": "=", "args": [{"property": name}, value]})
    if not args:
        return None
    return args[0] if len(args) == 1 else {"op": "and", "args": args}


# --------------------------------------------------------------------------------------------------
# SQLite: GEOS predicates as a SQL function
# --------------------------------------------------------------------------------------------------

_SHAPELY_OPS = {"s_intersects": shapely.intersects, "s_within": shapely.within, "s_contains": shapely.contains,
                "s_equals": shapely.equals, "s_disjoint": shapely.disjoint, "s_touches": shapely.touches,
                "s_crosses": shapely.crosses, "s_overlaps": shapely.overlaps}
_POSTGIS_OPS = {"s_intersects": "ST_Intersects", "s_within": "ST_Within", "s_contains": "ST_Contains",
                "s_equals": "ST_Equals", "s_disjoint": "ST_Disjoint", "s_touches": "ST_Touches",
                "s_crosses": "ST_Crosses", "s_overlaps": "ST_Overlaps"}
#: Operators that imply the envelopes meet, so the spatial index may narrow the candidates first.
_INDEXABLE = set(_SHAPELY_OPS) - {"s_disjoint"}


@lru_cache(maxsize=64)
def _query_geometry(wkb: bytes):
    geom = shapely.from_wkb(wkb)
    shapely.prepare(geom)
    return geom


def _sqlite_spatial(op: str, blob: bytes | None, wkb: bytes) -> int | None:
    if blob is None:
        return None
    return int(bool(_SHAPELY_OPS[op](from_gpkg(blob), _query_geometry(wkb))))


def register_sqlite(conn) -> None:
    """Make ``cityops_spatial(op, geom, wkb)`` available where SQL has no GEOS predicates (idempotent, cheap)."""
    storage_of(conn).register_function(conn, "cityops_spatial", 3, _sqlite_spatial)


def spatial_predicate(storage: Storage | str, op: str, column, geom) -> ColumnElement[bool]:
    wkb = bindparam(None, shapely.to_wkb(geom), type_=LargeBinary, unique=True)
    if storage_of(storage).spatial_sql:
        return getattr(func, _POSTGIS_OPS[op])(column, func.ST_GeomFromWKB(wkb, CANONICAL_SRID))
    return func.cityops_spatial(op, column, wkb) == 1


# --------------------------------------------------------------------------------------------------
# The translator
# --------------------------------------------------------------------------------------------------

@dataclass
class Compiled:
    where: ColumnElement[bool]
    #: Canonical envelopes every match must meet (from top-level AND-ed spatial predicates), for the index.
    envelopes: list[tuple[float, float, float, float]] = field(default_factory=list)


class Translator:
    def __init__(self, layer, table, storage: Storage | str, filter_crs):
        self.layer, self.table, self.storage, self.crs = layer, table, storage_of(storage), filter_crs
        self.fields = {f["name"]: f.get("type", "string") for f in layer.attribute_schema or []}
        self.envelopes: list[tuple[float, float, float, float]] = []

    # -- entry --------------------------------------------------------------------------------------
    def compile(self, node) -> Compiled:
        return Compiled(self.expr(node, top=True), self.envelopes)

    def expr(self, node, top: bool = False) -> ColumnElement[bool]:
        if isinstance(node, bool):
            return true() if node else false()
        if not isinstance(node, dict) or "op" not in node:
            raise FilterError(f"expected a predicate, got {json.dumps(node, ensure_ascii=False)[:80]}")
        op, args = node["op"].lower(), node.get("args", [])
        if op == "and":
            return and_(*[self.expr(a, top) for a in args])
        if op == "or":
            return or_(*[self.expr(a) for a in args])
        if op == "not":
            return not_(self.expr(args[0]))
        if op in ("=", "<>", "<", "<=", ">", ">="):
            return self.compare(op, args)
        if op == "isnull":
            return self.is_null(args[0])
        if op == "like":
            return self.like(args)
        if op == "between":
            return and_(self.compare(">=", [args[0], args[1]]), self.compare("<=", [args[0], args[2]]))
        if op == "in":
            values = args[1] if isinstance(args[1], list) else [args[1]]
            if not values:
                return false()
            return self.in_list(args[0], values)
        if op in _SHAPELY_OPS:
            return self.spatial(op, args, top)
        if op.startswith("t_"):
            return self.temporal(op, args)
        if op in ("a_equals", "a_contains", "a_containedby", "a_overlaps"):
            raise FilterError(f"array operator {op.upper()} is not supported (layers have no array properties)")
        raise FilterError(f"operator {node['op']!r} is not supported")

    # -- operands -----------------------------------------------------------------------------------
    def prop_name(self, node) -> str | None:
        if isinstance(node, dict) and "property" in node:
            name = node["property"]
            if name in GEOMETRY_NAMES or name in self.fields:
                return name
            raise FilterError(f"{name!r} is not a queryable of collection {self.layer.key!r}; see "
                              f"/collections/{self.layer.key}/queryables", details={"property": name})
        return None

    def _typed(self, name: str, kind: str, casei: bool = False):
        """The property as SQL, NULL unless its JSON value has ``kind`` (number|string|boolean)."""
        value, ok = self.storage.json_typed(self.table.c.properties, name, kind)
        if casei:
            value = func.lower(value)
        return case((ok, value), else_=None)

    def check_kind(self, name: str, kind: str) -> None:
        """A literal of another type than the queryable's is the client's mistake (``n = '3'`` on a number would
        silently match nothing): 400 naming both. Properties typed ``json`` take any literal."""
        declared = _JSON_TYPES.get(self.fields.get(name, "json"))
        expected = "number" if declared == "integer" else declared
        if expected is not None and expected != kind:
            raise FilterError(f"{name!r} is a {self.fields[name]} queryable; it cannot be compared with a {kind} "
                              f"literal", details={"property": name, "type": self.fields[name], "literal": kind})

    def literal_value(self, node):
        """A CQL2 literal → (kind, python value), or None when ``node`` is not a literal."""
        if isinstance(node, bool):
            return "boolean", int(node)
        if isinstance(node, (int, float)):
            return "number", float(node)
        if isinstance(node, str):
            return "string", node
        if isinstance(node, dict) and "timestamp" in node:
            return "string", _utc(node["timestamp"])
        if isinstance(node, dict) and "date" in node:
            return "string", node["date"]
        return None

    def _side(self, node):
        """(property name, casei) or (None, literal)."""
        if isinstance(node, dict) and node.get("op", "").lower() in ("casei", "accenti"):
            if node["op"].lower() == "accenti":
                raise FilterError("ACCENTI() is not supported")
            inner = node["args"][0]
            name = self.prop_name(inner)
            if name is not None:
                return ("prop", name, True)
            lit = self.literal_value(inner)
            if lit is None or lit[0] != "string":
                raise FilterError("CASEI() takes a property or a string")
            return ("lit", (lit[0], lit[1].lower()), True)
        name = self.prop_name(node)
        if name is not None:
            return ("prop", name, False)
        lit = self.literal_value(node)
        if lit is None:
            raise FilterError(f"unsupported operand {json.dumps(node, ensure_ascii=False)[:80]} "
                              "(expected a queryable or a literal)")
        return ("lit", lit, False)

    def compare(self, op: str, args) -> ColumnElement[bool]:
        a, b = self._side(args[0]), self._side(args[1])
        if a[0] == "lit" and b[0] == "lit":
            x, y = a[1][1], b[1][1]
            return true() if _py_compare(op, x, y) else false()
        if a[0] == "prop" and b[0] == "prop":
            raise FilterError("comparing two properties is not supported; compare a property with a literal")
        if a[0] == "lit":  # literal on the left: mirror
            a, b = b, a
            op = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(op, op)
        name, casei = a[1], a[2] or b[2]
        if name in GEOMETRY_NAMES:
            raise FilterError(f"{name!r} is the geometry; use a spatial operator such as S_INTERSECTS")
        kind, value = b[1]
        self.check_kind(name, kind)
        column = self._typed(name, kind, casei)
        bound = literal(value)
        return {"=": column == bound, "<>": column != bound, "<": column < bound, "<=": column <= bound,
                ">": column > bound, ">=": column >= bound}[op]

    def in_list(self, left, values: list) -> ColumnElement[bool]:
        """``prop IN (…)`` as one SQL ``IN`` per literal type: an OR of one comparison per value made an
        expression as deep as the list (SQLite refuses beyond 1,000) and took seconds to compile."""
        side = self._side(left)
        if side[0] == "lit":
            return or_(*[self.compare("=", [left, v]) for v in values])
        name, casei = side[1], side[2]
        if name in GEOMETRY_NAMES:
            raise FilterError(f"{name!r} is the geometry; use a spatial operator such as S_INTERSECTS")
        groups: dict[tuple[str, bool], list] = {}
        for value in values:
            other = self._side(value)
            if other[0] == "prop":
                raise FilterError("IN compares a property with a list of literals")
            kind, literal_ = other[1]
            self.check_kind(name, kind)
            groups.setdefault((kind, casei or other[2]), []).append(literal_)
        return or_(*[self._typed(name, kind, ci).in_(items) for (kind, ci), items in groups.items()])

    def is_null(self, node) -> ColumnElement[bool]:
        name = self.prop_name(node)
        if name is None:
            raise FilterError("IS NULL takes a queryable")
        if name in GEOMETRY_NAMES:
            return self.table.c.geom.is_(None)
        jtype = self.storage.json_typeof(self.table.c.properties, name)
        return or_(jtype.is_(None), jtype == "null")

    def like(self, args) -> ColumnElement[bool]:
        kind, name, casei = self._side(args[0])
        pkind, pattern, pcasei = self._side(args[1])
        if kind != "prop" or pkind != "lit" or pattern[0] != "string":
            raise FilterError("LIKE takes a queryable and a string pattern")
        self.check_kind(name, "string")
        casei = casei or pcasei
        text = pattern[1].lower() if casei else pattern[1]
        return self.storage.like(self._typed(name, "string", casei), text)

    def spatial(self, op: str, args, top: bool) -> ColumnElement[bool]:
        name = self.prop_name(args[0])
        other = args[1]
        if name is None:  # literal first: swap the roles
            name, other = self.prop_name(args[1]), args[0]
            op = {"s_within": "s_contains", "s_contains": "s_within"}.get(op, op)
        if name not in GEOMETRY_NAMES:
            raise FilterError(f"{op.upper()} needs the geometry queryable ('geometry') and a geometry literal")
        geom = self.geometry_literal(other)
        if top and op in _INDEXABLE:
            self.envelopes.append(geom.bounds)
        return spatial_predicate(self.storage, op, self.table.c.geom, geom)

    def geometry_literal(self, node):
        try:
            if isinstance(node, dict) and "bbox" in node:
                b = node["bbox"]
                if len(b) == 6:
                    b = [b[0], b[1], b[3], b[4]]
                geom = shapely.box(*b) if len(b) == 4 else None
            else:
                geom = read_geometry(node, check_valid=False)
        except Exception:  # noqa: BLE001 - any malformed literal is the client's error
            geom = None
        if geom is None or geom.is_empty:
            raise FilterError(f"invalid geometry literal {json.dumps(node)[:80]}")
        if not geom.is_valid:
            raise FilterError(f"geometry literal is not valid: {shapely.is_valid_reason(geom)}")
        return to_canonical_geometry(geom, self.crs, "filter-crs")

    def temporal(self, op: str, args) -> ColumnElement[bool]:
        name = self.prop_name(args[0])
        if name is None or self.fields.get(name) not in ("datetime", "date", "string"):
            raise FilterError(f"{op.upper()} needs a date or datetime queryable first")
        start, end = _instant_or_interval(args[1])
        column = self._typed(name, "string")
        # An instant property against an interval [start, end] (open ends as None).
        if op == "t_after":
            return column > literal(end) if end is not None else false()
        if op == "t_before":
            return column < literal(start) if start is not None else false()
        if op in ("t_equals",):
            return column == literal(start) if start == end else false()
        if op in ("t_intersects", "t_during", "t_contains"):
            conds = [column.is_not(None)]
            if start is not None:
                conds.append(column >= literal(start) if op != "t_during" else column > literal(start))
            if end is not None:
                conds.append(column <= literal(end) if op != "t_during" else column < literal(end))
            if op == "t_contains" and start != end:
                return false()  # an instant cannot contain an interval
            return and_(*conds)
        if op == "t_disjoint":
            inside = [column >= literal(start)] if start is not None else []
            inside += [column <= literal(end)] if end is not None else []
            return and_(column.is_not(None), not_(and_(*inside))) if inside else false()
        raise FilterError(f"temporal operator {op.upper()} is not supported for instant properties")


def _py_compare(op, x, y) -> bool:
    try:
        return {"=": x == y, "<>": x != y, "<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]
    except TypeError:
        return False


def _utc(value: str) -> str:
    """An RFC 3339 timestamp normalised to ``YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`` (UTC), the form the layer
    importers store, so that string order is time order."""
    from datetime import datetime, timezone

    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise FilterError(f"{value!r} is not an RFC 3339 timestamp") from None
    dt = dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
    return dt.isoformat()


def _instant_or_interval(node) -> tuple[str | None, str | None]:
    if isinstance(node, dict) and "interval" in node:
        a, b = node["interval"]

        def one(v):
            if v == ".." or v is None:
                return None
            if isinstance(v, dict):
                return _utc(v["timestamp"]) if "timestamp" in v else v.get("date")
            return _utc(v) if "T" in v else v

        return one(a), one(b)
    if isinstance(node, dict) and "timestamp" in node:
        v = _utc(node["timestamp"])
        return v, v
    if isinstance(node, dict) and "date" in node:
        return node["date"], node["date"]
    raise FilterError("a temporal operator needs a TIMESTAMP, DATE or INTERVAL literal")


def to_canonical_geometry(geom, served, what: str):
    """A geometry in a served CRS (authority axis order) → canonical lon/lat; 400 naming ``what`` when the
    coordinates cannot be in that CRS."""
    if served.swap:
        geom = shapely.transform(geom, lambda c: c[:, ::-1])
    if served.key in ("OGC:CRS84", "EPSG:4490", "EPSG:4326"):
        coords = shapely.get_coordinates(geom)
        if not (np.all(np.abs(coords[:, 0]) <= 180) and np.all(np.abs(coords[:, 1]) <= 90)):
            raise FilterError(f"coordinates are outside the longitude/latitude range of {what} {served.uri}"
                              + (" (latitude comes first in this CRS)" if served.swap else ""))
        return geom
    if served.geographic is False and max(np.ptp(shapely.get_coordinates(geom), axis=0).tolist() or [0]) < 2_000_000:
        geom = shapely.segmentize(geom, 50.0) if geom.geom_type not in ("Point", "MultiPoint") else geom
    try:
        def convert(c):
            out = c.copy()
            out[:, 0], out[:, 1] = to_canonical_xy(c[:, 0], c[:, 1], served.key)
            return out

        return shapely.transform(geom, convert)
    except CityOpsError as exc:
        raise FilterError(f"coordinates cannot be converted from {what} {served.uri}: {exc.message}") from None


def compile_filter(tree: dict, layer, table, storage: Storage | str, filter_crs) -> Compiled:
    return Translator(layer, table, storage, filter_crs).compile(tree)
