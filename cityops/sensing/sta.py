"""OGC SensorThings API 1.1 over the ``sta_*`` tables: entity sets, navigation, query options, create,
update, delete, deep insert. No HTTP here: the routes parse the URL and call these functions.

The OData ``$filter`` grammar is parsed by ``odata-query`` (a maintained OData v4 parser); this module
only maps SensorThings names onto our columns, because STA times are stored as epoch milliseconds and
``properties/…`` are JSON paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

import numpy as np
from odata_query import ast as oast
from odata_query import exceptions as oex
from odata_query.grammar import ODataLexer, ODataParser
from odata_query.sqlalchemy.core import AstToSqlAlchemyCoreVisitor
from sqlalchemy import Float, Text, and_, cast, delete, func, literal, select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.errors import CityOpsError, Forbidden, InvalidInput, NotFound
from cityops.core.params import INT32_MAX, INT64_MAX, INT64_MIN, parse_int
from cityops.core.storage import Storage, storage_of
from cityops.identity.scope import Scope
from cityops.org.models import Unit
from cityops.sensing import catalog
from cityops.sensing.models import (Datastream, FeatureOfInterest, HistoricalLocation, HistoricalLocationLocation, Location,
                                    Observation, ObservedProperty, Sensor, Thing, ThingLocation)
from cityops.sensing.timeutil import iso, iso_interval, now_ms, parse_instant, parse_time


class StaBadRequest(CityOpsError):
    """STA answers malformed requests with 400 (a missing required property, a bad query option)."""

    status_code = 400
    code = "bad_request"


OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
GEOJSON = "application/geo+json"
MAX_TOP = 10_000
DEFAULT_TOP = 100


@dataclass(frozen=True)
class Nav:
    target: str
    one: bool
    #: clause on the target model, given a SELECT of source ids
    clause: Callable[[Any], Any]


@dataclass(frozen=True)
class EntitySet:
    name: str
    singular: str
    model: Any
    #: STA property name → column attribute name
    columns: dict[str, str]
    #: properties that are times in epoch ms (for $filter literals and $orderby)
    times: frozenset = frozenset()
    navs: dict[str, Nav] = field(default_factory=dict)
    required: tuple[str, ...] = ()


def _ids(model, col, sub):
    return getattr(model, col).in_(sub)


SETS: dict[str, EntitySet] = {}


def _register(s: EntitySet) -> None:
    SETS[s.name] = s


_register(EntitySet("Things", "Thing", Thing, {"id": "id", "name": "name", "description": "description", "properties": "properties"},
                    navs={
                        "Locations": Nav("Locations", False, lambda sub: Location.id.in_(
                            select(ThingLocation.location_id).where(ThingLocation.thing_id.in_(sub)))),
                        "HistoricalLocations": Nav("HistoricalLocations", False, lambda sub: HistoricalLocation.thing_id.in_(sub)),
                        "Datastreams": Nav("Datastreams", False, lambda sub: Datastream.thing_id.in_(sub)),
                    }, required=("name", "description")))
_register(EntitySet("Locations", "Location", Location,
                    {"id": "id", "name": "name", "description": "description", "encodingType": "encoding_type",
                     "location": "location", "properties": "properties"},
                    navs={
                        "Things": Nav("Things", False, lambda sub: Thing.id.in_(
                            select(ThingLocation.thing_id).where(ThingLocation.location_id.in_(sub)))),
                        "HistoricalLocations": Nav("HistoricalLocations", False, lambda sub: HistoricalLocation.id.in_(
                            select(HistoricalLocationLocation.historical_location_id).where(
                                HistoricalLocationLocation.location_id.in_(sub)))),
                    }, required=("name", "description", "encodingType", "location")))
_register(EntitySet("HistoricalLocations", "HistoricalLocation", HistoricalLocation, {"id": "id", "time": "time_ms"},
                    times=frozenset({"time"}),
                    navs={
                        "Thing": Nav("Things", True, lambda sub: Thing.id.in_(
                            select(HistoricalLocation.thing_id).where(HistoricalLocation.id.in_(sub)))),
                        "Locations": Nav("Locations", False, lambda sub: Location.id.in_(
                            select(HistoricalLocationLocation.location_id).where(
                                HistoricalLocationLocation.historical_location_id.in_(sub)))),
                    }, required=("time",)))
_register(EntitySet("Sensors", "Sensor", Sensor,
                    {"id": "id", "name": "name", "description": "description", "encodingType": "encoding_type",
                     "metadata": "sensor_metadata", "properties": "properties"},
                    navs={"Datastreams": Nav("Datastreams", False, lambda sub: Datastream.sensor_id.in_(sub))},
                    required=("name", "description", "encodingType", "metadata")))
_register(EntitySet("ObservedProperties", "ObservedProperty", ObservedProperty,
                    {"id": "id", "name": "name", "definition": "definition", "description": "description",
                     "properties": "properties"},
                    navs={"Datastreams": Nav("Datastreams", False, lambda sub: Datastream.observed_property_id.in_(sub))},
                    required=("name", "definition", "description")))
_register(EntitySet("Datastreams", "Datastream", Datastream,
                    {"id": "id", "name": "name", "description": "description", "unitOfMeasurement": "unit_of_measurement",
                     "observationType": "observation_type", "properties": "properties", "observedArea": "observed_area",
                     "phenomenonTime": "phenomenon_start_ms", "resultTime": "result_time_start_ms"},
                    times=frozenset({"phenomenonTime", "resultTime"}),
                    navs={
                        "Thing": Nav("Things", True, lambda sub: Thing.id.in_(select(Datastream.thing_id).where(Datastream.id.in_(sub)))),
                        "Sensor": Nav("Sensors", True, lambda sub: Sensor.id.in_(select(Datastream.sensor_id).where(Datastream.id.in_(sub)))),
                        "ObservedProperty": Nav("ObservedProperties", True, lambda sub: ObservedProperty.id.in_(
                            select(Datastream.observed_property_id).where(Datastream.id.in_(sub)))),
                        "Observations": Nav("Observations", False, lambda sub: Observation.datastream_id.in_(sub)),
                    }, required=("name", "description", "unitOfMeasurement", "observationType")))
_register(EntitySet("Observations", "Observation", Observation,
                    {"id": "id", "phenomenonTime": "t_ms", "resultTime": "result_time_ms", "result": "result_num",
                     "resultQuality": "result_quality", "validTime": "valid_time", "parameters": "parameters"},
                    times=frozenset({"phenomenonTime", "resultTime"}),
                    navs={
                        "Datastream": Nav("Datastreams", True, lambda sub: Datastream.id.in_(
                            select(Observation.datastream_id).where(Observation.id.in_(sub)))),
                        "FeatureOfInterest": Nav("FeaturesOfInterest", True, lambda sub: FeatureOfInterest.id.in_(
                            select(Observation.foi_id).where(Observation.id.in_(sub)))),
                    }, required=("result",)))
_register(EntitySet("FeaturesOfInterest", "FeatureOfInterest", FeatureOfInterest,
                    {"id": "id", "name": "name", "description": "description", "encodingType": "encoding_type",
                     "feature": "feature", "properties": "properties"},
                    navs={"Observations": Nav("Observations", False, lambda sub: Observation.foi_id.in_(sub))},
                    required=("name", "description", "encodingType", "feature")))

SINGULAR = {s.singular: s for s in SETS.values()}
JSON_COLUMNS = {"properties", "location", "feature", "unit_of_measurement", "observed_area", "parameters", "result_quality"}


# ------------------------------------------------------------------------------------------------ scope

#: The entity sets every township's devices share (one catalogue of the district), not scoped by unit.
CATALOGUE = ("Sensors", "ObservedProperties")


def scope_clause(set_name: str, scope: Scope):
    """Rows of ``set_name`` the scope covers. Sensors and ObservedProperties are a shared catalogue."""
    model = SETS[set_name].model
    if set_name in CATALOGUE:
        return literal(True)
    if set_name == "Observations":
        if scope.all_units:
            return literal(True)
        return Observation.datastream_id.in_(select(Datastream.id).where(scope.covers_clause(Datastream.unit_path)))
    return scope.covers_clause(model.unit_path)


# --------------------------------------------------------------------------------------------- $filter

class _FilterVisitor(AstToSqlAlchemyCoreVisitor):
    """Maps STA names to columns; datetime literals become epoch ms like the time columns."""

    def __init__(self, entity: EntitySet, storage: Storage | str):
        self.entity = entity
        self.storage = storage_of(storage)
        self.table = entity.model.__table__

    def _column(self, name: str):
        if name not in self.entity.columns:
            raise InvalidInput(f"$filter: {self.entity.name} has no property {name!r}")
        return getattr(self.entity.model, self.entity.columns[name])

    def visit_Identifier(self, node):
        return self._column(node.name)

    def visit_Attribute(self, node):
        # properties/a/b … → JSON path; Datastream/id, Thing/name, Datastream/Thing/properties/x … → the related
        # entity's property (to-one relations: a column of this row, or a subquery per step).
        parts = []
        owner = node
        while isinstance(owner, oast.Attribute):
            parts.insert(0, owner.attr)
            owner = owner.owner
        if not isinstance(owner, oast.Identifier):
            raise StaBadRequest("$filter: a path must start with a property or a relation")
        parts.insert(0, owner.name)
        entity, chain = self.entity, []  # chain: (entity, its column holding the next entity's id)
        while parts[0] in entity.navs:
            nav = parts.pop(0)
            column = _TO_ONE.get((entity.name, nav))
            if column is None or not parts:
                to_one = [n for (set_name, n) in _TO_ONE if set_name == entity.name]
                raise StaBadRequest(f"$filter: {nav} of {entity.name} is not a to-one relation followed by a property"
                                   + (f"; filter through {', '.join(f'{n}/…' for n in to_one)}" if to_one else ""))
            chain.append((entity, getattr(entity.model, column)))
            entity = SETS[entity.navs[nav].target]
        name, rest = parts[0], parts[1:]
        if name not in entity.columns:
            raise StaBadRequest(f"$filter: {entity.name} has no property {name!r}")
        if rest and name not in ("properties", "parameters", "unitOfMeasurement"):
            raise StaBadRequest("$filter: only paths into properties/…, parameters/… and unitOfMeasurement/… are supported")
        if len(chain) == 1 and name == "id":
            return chain[0][1]  # Datastream/id of an Observation is its datastream_id
        value = getattr(entity.model, entity.columns[name])
        if rest:
            value = self.storage.json_path(value, rest)
        if not chain:
            return value
        # One subquery joining the related entities, tied to this row by its own column only (a subquery per
        # step would leave the inner ones uncorrelated).
        q, inner = select(value).select_from(entity.model), entity
        for ent, fk in reversed(chain[1:]):
            q, inner = q.join(ent.model, fk == inner.model.id), ent
        return q.where(inner.model.id == chain[0][1]).scalar_subquery()

    def visit_Integer(self, node):
        if not INT64_MIN <= node.py_val <= INT64_MAX:
            raise StaBadRequest(f"$filter: the number {node.val[:40]} is outside the 64-bit integer range")
        return literal(node.py_val)

    def visit_DateTime(self, node):
        return literal(parse_instant(node.val, "$filter"))

    # date() and time() of a time property are compared as text, 'YYYY-MM-DD' and 'HH:MM:SS.mmm' (UTC), so
    # their literals are written the same way (the library's Python date and time objects matched nothing).
    def visit_Date(self, node):
        try:
            return literal(node.py_val.isoformat(), Text)
        except ValueError:
            raise StaBadRequest(f"$filter: {node.val!r} is not a date") from None

    def visit_Time(self, node):
        try:
            return literal(node.py_val.isoformat(timespec="milliseconds"), Text)
        except ValueError:
            raise StaBadRequest(f"$filter: {node.val!r} is not a time") from None

    def _instant(self, field_node):
        """A time property (epoch ms) or a date-time literal: what date(), time(), year() … take (anything else
        would reach the database as text divided by a number)."""
        if isinstance(field_node, oast.DateTime) or (isinstance(field_node, oast.Identifier)
                                                     and field_node.name in self.entity.times):
            return self.visit(field_node)
        raise StaBadRequest(f"$filter: date and time functions take one of {self.entity.name}' time properties "
                            f"({', '.join(sorted(self.entity.times)) or 'it has none'}) or a date-time")

    def func_date(self, f):
        return self.storage.epoch_ms_text(self._instant(f), "date")

    def func_time(self, f):
        return self.storage.epoch_ms_text(self._instant(f), "time")

    def visit_Call(self, node):
        # geo.length is not the string length(), geo.intersects not a string function: dispatch by namespace.
        name = node.func.name.lower()
        if node.func.namespace == ("geo",):
            return self._geo(name, node.args)
        if name == "substringof":  # SensorThings keeps OData 2's substringof(needle, haystack)
            return self.func_contains(node.args[1], node.args[0])
        if name in _ST_PREDICATES:
            return self._geo(name.removeprefix("st_"), node.args)
        return super().visit_Call(node)

    def _geometry(self, node):
        """A geometry column (GeoJSON) or a geography'…' literal (WKT, optionally SRID=4326;) as SQL."""
        if isinstance(node, oast.Geography):
            import shapely

            wkt = re.sub(r"^\s*SRID=4326\s*;", "", node.val, flags=re.I)
            try:
                geom = shapely.from_wkt(wkt)
            except shapely.errors.GEOSException:
                raise StaBadRequest(f"$filter: geography'{node.val[:80]}' is not valid WKT") from None
            return func.ST_GeomFromText(literal(geom.wkt, Text), 4326) if self.storage.spatial_sql \
                else literal(geom.wkt, Text)
        if isinstance(node, oast.Identifier) and node.name in _GEOMETRY_PROPERTIES.get(self.entity.name, ()):
            column = self._column(node.name)
            if self.storage.spatial_sql:  # a GeoJSON geometry, or a Feature holding one
                return func.ST_GeomFromGeoJSON(cast(func.coalesce(column.op("->")(literal("geometry", Text)), column), Text))
            return column
        allowed = _GEOMETRY_PROPERTIES.get(self.entity.name)
        raise StaBadRequest(f"$filter: a geospatial function takes geography'…' literals and "
                            + (f"the {' or '.join(allowed)} of {self.entity.name}" if allowed else
                               f"no property of {self.entity.name}"))

    def _geo(self, name: str, args):
        arity = 1 if name == "length" else (3 if name == "relate" else 2)
        if len(args) != arity:
            raise StaBadRequest(f"$filter: {name} takes {arity} arguments")
        operands = [self._geometry(a) for a in args[:2]] + [self.visit(a) for a in args[2:]]
        if self.storage.spatial_sql:
            return getattr(func, "ST_" + name.capitalize())(*operands)
        value = func.cityops_sta_geo(name, *(operands + [None, None])[:3])
        return value if name in ("length", "distance") else value == 1

    def visit_Compare(self, node):
        left, right = self.visit(node.left), self.visit(node.right)
        # A JSON value is text to SQL: compared with a number, it is read as one (a related id stays a column).
        if _json_path(node.left) and isinstance(node.right, (oast.Integer, oast.Float)):
            left = cast(left, Float)
        if _json_path(node.right) and isinstance(node.left, (oast.Integer, oast.Float)):
            right = cast(right, Float)
        return self.visit(node.comparator)(left, right)

    def _part(self, fmt: str, field_node):
        return self.storage.epoch_ms_part(self._instant(field_node), fmt)

    def func_year(self, f):
        return self._part("year", f)

    def func_month(self, f):
        return self._part("month", f)

    def func_day(self, f):
        return self._part("day", f)

    def func_hour(self, f):
        return self._part("hour", f)

    def func_minute(self, f):
        return self._part("minute", f)

    def func_second(self, f):
        return self._part("second", f)

    # The library's indexof and concat call strpos() and concat(), which SQLite lacks (3.44 added concat):
    # instr() is SQLite's strpos (1-based, 0 when absent), and || concatenates on both backends.
    def func_indexof(self, first, second):
        return self.storage.text_position(self.visit(first), self.visit(second)) - 1

    def func_concat(self, *args):
        parts = [cast(self.visit(arg), Text) for arg in args]
        out = parts[0]
        for part in parts[1:]:
            out = out.op("||")(part)
        return out

    def func_now(self):
        return literal(now_ms())


#: The column holding the id of a to-one related entity ($filter paths such as Datastream/id or Thing/name).
_TO_ONE = {("Observations", "Datastream"): "datastream_id", ("Observations", "FeatureOfInterest"): "foi_id",
           ("Datastreams", "Thing"): "thing_id", ("Datastreams", "Sensor"): "sensor_id",
           ("Datastreams", "ObservedProperty"): "observed_property_id", ("HistoricalLocations", "Thing"): "thing_id"}
#: GeoJSON properties the geospatial functions take, per entity set.
_GEOMETRY_PROPERTIES = {"Locations": ("location",), "FeaturesOfInterest": ("feature",), "Datastreams": ("observedArea",)}
#: SensorThings 1.1's spatial predicates (Table 17): st_equals … st_relate, beside OData's geo.intersects.
_ST_PREDICATES = {f"st_{n}": 2 for n in ("equals", "disjoint", "touches", "within", "overlaps", "crosses", "intersects",
                                           "contains")} | {"st_relate": 3, "substringof": 2}
#: ``@iot.id`` in a path (frost-sta-client writes Datastream/@iot.id), outside string literals: OData's lexer
#: does not take the ``@``; it names the id.
_IOT_ID = re.compile(r"('(?:[^']|'')*')|@iot\.id\b")


def _json_path(node) -> bool:
    """``node`` is a path into a JSON property (properties/…, parameters/…, unitOfMeasurement/…)."""
    while isinstance(node, oast.Attribute):
        if isinstance(node.owner, oast.Identifier) and node.owner.name in ("properties", "parameters", "unitOfMeasurement"):
            return True
        node = node.owner
    return False


def _parser() -> ODataParser:
    """OData's parser, taking SensorThings' own functions (st_*, substringof) too: it refuses any name outside
    OData 4's list. Set on this instance (the grammar cannot be subclassed), not on the library's table."""
    parser = ODataParser()
    known = parser._function_call

    def function_call(func_, args):
        arity = _ST_PREDICATES.get(func_.name.lower()) if func_.namespace == () else None
        if arity is None:
            return known(func_, args)
        if len(args) != arity:
            raise StaBadRequest(f"$filter: {func_.name} takes {arity} arguments")
        return oast.Call(func_, args)

    parser._function_call = function_call
    return parser


def _sqlite_geo(name: str, a, b, extra):
    """SQLite's geospatial $filter functions, by GEOS (PostGIS's own on PostgreSQL): GeoJSON or WKT operands."""
    import shapely

    def read(v):
        return None if v is None else (shapely.from_geojson(v) if v.lstrip().startswith("{") else shapely.from_wkt(v))

    try:
        first, second = read(a), read(b)
    except shapely.errors.GEOSException:
        return None
    if first is None or (second is None and name != "length"):
        return None
    if name == "length":
        return shapely.length(first)
    if name == "distance":
        return shapely.distance(first, second)
    if name == "relate":
        return int(shapely.relate_pattern(first, second, extra))
    return int(bool(getattr(shapely, name)(first, second)))


def register_sqlite(session: Session) -> None:
    """Make ``cityops_sta_geo`` available on the session's SQLite connection (idempotent, cheap)."""
    conn = session.connection()
    storage_of(conn).register_function(conn, "cityops_sta_geo", 4, _sqlite_geo)


def filter_clause(entity: EntitySet, text: str, storage: Storage | str):
    text = _IOT_ID.sub(lambda m: m.group(1) or "id", text)
    try:
        tree = _parser().parse(ODataLexer().tokenize(text))
        return _FilterVisitor(entity, storage).visit(tree)
    except CityOpsError:
        raise
    except (oex.ODataException, NotImplementedError, Exception) as exc:  # the parser raises several kinds
        raise StaBadRequest(f"$filter {text!r} is not understood: {exc}") from None


# ------------------------------------------------------------------------------------- query options

@dataclass
class Options:
    top: int | None = None
    skip: int = 0
    count: bool = False
    orderby: list[tuple[str, bool]] = field(default_factory=list)
    select: list[str] | None = None
    filter: str | None = None
    expand: dict[str, "Options"] = field(default_factory=dict)


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, buf, quote = [], 0, [], False
    for ch in text:
        if ch == "'":
            quote = not quote
        if not quote:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == sep and depth == 0:
                parts.append("".join(buf).strip())
                buf = []
                continue
        buf.append(ch)
    if depth != 0:
        raise StaBadRequest(f"unbalanced parentheses in {text!r}")
    if "".join(buf).strip():
        parts.append("".join(buf).strip())
    return parts


def parse_options(params: dict[str, str], entity: EntitySet) -> Options:
    opts = Options()
    known = {"$top", "$skip", "$count", "$orderby", "$select", "$filter", "$expand", "$resultFormat"}
    for key in params:
        if key.startswith("$") and key not in known:
            raise StaBadRequest(f"unknown query option {key}")
    try:
        if "$top" in params:
            opts.top = parse_int(params["$top"], "$top", minimum=0)
        if "$skip" in params:
            opts.skip = parse_int(params["$skip"], "$skip", minimum=0)
    except InvalidInput as exc:
        raise StaBadRequest(exc.message) from None
    if "$count" in params:
        if params["$count"] not in ("true", "false"):
            raise StaBadRequest("$count is true or false")
        opts.count = params["$count"] == "true"
    if params.get("$orderby"):
        for part in _split_top(params["$orderby"], ","):
            words = part.split()
            name, desc = words[0], len(words) > 1 and words[1].lower() == "desc"
            if name not in entity.columns:
                raise StaBadRequest(f"$orderby: {entity.name} has no property {name!r}")
            opts.orderby.append((name, desc))
    if params.get("$select"):
        opts.select = [s.strip() for s in params["$select"].split(",") if s.strip()]
        for name in opts.select:
            if name not in entity.columns and name not in entity.navs and name not in ("@iot.id", "@iot.selfLink"):
                raise StaBadRequest(f"$select: {entity.name} has no property {name!r}")
    if params.get("$filter"):
        opts.filter = params["$filter"]
    if params.get("$expand"):
        for part in _split_top(params["$expand"], ","):
            opts.expand.update(_parse_expand(part, entity))
    return opts


def _parse_expand(part: str, entity: EntitySet) -> dict[str, Options]:
    match = re.fullmatch(r"([A-Za-z]+)(?:/(.+?))?(?:\((.*)\))?", part.strip(), re.S)
    if not match:
        raise StaBadRequest(f"$expand: cannot read {part!r}")
    nav, rest, inner = match.groups()
    if nav not in entity.navs:
        raise StaBadRequest(f"$expand: {entity.name} has no navigation property {nav!r}")
    target = SETS[entity.navs[nav].target]
    params = {}
    if inner:
        for piece in _split_top(inner, ";"):
            if "=" not in piece:
                raise StaBadRequest(f"$expand: cannot read {piece!r}")
            k, v = piece.split("=", 1)
            params[k.strip()] = v.strip()
    opts = parse_options(params, target)
    if rest:
        opts.expand.update(_parse_expand(rest, target))
    return {nav: opts}


# --------------------------------------------------------------------------------------- serialisation

def self_link(base: str, set_name: str, entity_id: int) -> str:
    return f"{base}/{set_name}({entity_id})"


def entity_json(base: str, set_name: str, row, select_: list[str] | None = None) -> dict:
    e = SETS[set_name]
    link = self_link(base, set_name, row.id)
    out: dict[str, Any] = {"@iot.id": row.id, "@iot.selfLink": link}
    for name, attr in e.columns.items():
        if name == "id":
            continue
        out[name] = value_of(set_name, row, name)
    for nav in e.navs:
        out[f"{nav}@iot.navigationLink"] = f"{link}/{nav}"
    if select_:
        keep = {"@iot.id"} if "id" in select_ or "@iot.id" in select_ else set()
        if "@iot.selfLink" in select_:
            keep.add("@iot.selfLink")
        keep |= {s for s in select_ if s in e.columns}
        keep |= {f"{s}@iot.navigationLink" for s in select_ if s in e.navs}
        out = {k: v for k, v in out.items() if k in keep}
    return out


def value_of(set_name: str, row, name: str):
    if set_name == "Observations":
        if name == "phenomenonTime":
            return iso_interval(row.t_ms, row.t_end_ms)
        if name == "result":
            return row.result_json if row.result_json is not None else row.result_num
        if name == "resultTime":
            return iso(row.result_time_ms)
    if set_name == "Datastreams":
        if name == "phenomenonTime":
            return iso_interval(row.phenomenon_start_ms, row.phenomenon_end_ms) if row.phenomenon_start_ms is not None else None
        if name == "resultTime":
            return iso_interval(row.result_time_start_ms, row.result_time_end_ms) if row.result_time_start_ms is not None else None
    if set_name == "HistoricalLocations" and name == "time":
        return iso(row.time_ms)
    if name == "id":
        return row.id
    return getattr(row, SETS[set_name].columns[name])


# ------------------------------------------------------------------------------------------------ reads

@dataclass
class Ctx:
    session: Session
    scope: Scope
    base: str
    #: The principal keeps the shared catalogue (Sensors, ObservedProperties): see ``keeps_catalogue``.
    catalogue: bool = False

    @property
    def storage(self) -> Storage:
        return storage_of(self.session)


def _base_query(ctx: Ctx, set_name: str, where=None):
    e = SETS[set_name]
    q = select(e.model).where(scope_clause(set_name, ctx.scope))
    if where is not None:
        q = q.where(where)
    return q


def query_collection(ctx: Ctx, set_name: str, opts: Options, where=None, next_base: str | None = None,
                     raw_params: dict | None = None) -> dict:
    e = SETS[set_name]
    q = _base_query(ctx, set_name, where)
    if opts.filter:
        register_sqlite(ctx.session)
        q = q.where(filter_clause(e, opts.filter, ctx.storage))
    out: dict[str, Any] = {}
    if opts.count:
        out["@iot.count"] = ctx.session.scalar(select(func.count()).select_from(q.subquery()))
    order = [getattr(e.model, e.columns[n]).desc() if d else getattr(e.model, e.columns[n]).asc() for n, d in opts.orderby]
    q = q.order_by(*order, e.model.id.asc())
    top = DEFAULT_TOP if opts.top is None else min(opts.top, MAX_TOP)
    rows = list(ctx.session.scalars(q.offset(opts.skip).limit(top + 1)))
    more = len(rows) > top
    rows = rows[:top]
    if more and next_base is not None:
        from urllib.parse import urlencode

        params = dict(raw_params or {})
        params["$skip"] = str(opts.skip + top)
        params["$top"] = str(top)
        out["@iot.nextLink"] = f"{next_base}?{urlencode(params)}"
    out["value"] = [render(ctx, set_name, r, opts) for r in rows]
    return out


def render(ctx: Ctx, set_name: str, row, opts: Options) -> dict:
    data = entity_json(ctx.base, set_name, row, opts.select)
    e = SETS[set_name]
    for nav, sub in opts.expand.items():
        spec = e.navs[nav]
        clause = spec.clause(select(e.model.id).where(e.model.id == row.id))
        if spec.one:
            target = ctx.session.scalar(_base_query(ctx, spec.target, clause))
            data[nav] = render(ctx, spec.target, target, sub) if target is not None else None
        else:
            link = f"{self_link(ctx.base, set_name, row.id)}/{nav}"
            res = query_collection(ctx, spec.target, sub, clause, next_base=link)
            data[nav] = res["value"]
            if "@iot.count" in res:
                data[f"{nav}@iot.count"] = res["@iot.count"]
            if "@iot.nextLink" in res:
                data[f"{nav}@iot.nextLink"] = res["@iot.nextLink"]
        data.pop(f"{nav}@iot.navigationLink", None) if opts.select and nav not in (opts.select or []) else None
    return data


def get_one(ctx: Ctx, set_name: str, entity_id: int, where=None):
    e = SETS[set_name]
    q = _base_query(ctx, set_name, e.model.id == entity_id)
    if where is not None:
        q = q.where(where)
    row = ctx.session.scalar(q)
    if row is None:
        raise NotFound(f"{e.singular}({entity_id}) does not exist")
    return row


@dataclass
class Resolved:
    set_name: str
    one: bool
    where: Any = None
    entity_id: int | None = None


_SEGMENT = re.compile(r"^([A-Za-z]+)(?:\(([^()]*)\))?$")


def resolve_path(ctx: Ctx, segments: list[str]) -> tuple[Resolved, list[str]]:
    """Walk ``Set(id)/Nav(id)/Nav…``; returns what it names and the unconsumed tail (property, $value, $ref)."""
    first = _SEGMENT.match(segments[0])
    if not first or first.group(1) not in SETS:
        raise NotFound(f"no entity set {segments[0]!r}")
    set_name, raw_id = first.groups()
    current = Resolved(set_name, False)
    if raw_id:
        entity_id = _parse_id(raw_id, set_name)
        get_one(ctx, set_name, entity_id)
        current = Resolved(set_name, True, SETS[set_name].model.id == entity_id, entity_id)
    i = 1
    while i < len(segments):
        m = _SEGMENT.match(segments[i])
        e = SETS[current.set_name]
        if not m or m.group(1) not in e.navs or not current.one:
            break
        spec = e.navs[m.group(1)]
        sub = select(e.model.id).where(current.where).where(scope_clause(current.set_name, ctx.scope))
        where = spec.clause(sub)
        if m.group(2):
            entity_id = _parse_id(m.group(2), spec.target)
            target = SETS[spec.target]
            get_one(ctx, spec.target, entity_id, where)
            current = Resolved(spec.target, True, target.model.id == entity_id, entity_id)
        elif spec.one:
            row = ctx.session.scalar(_base_query(ctx, spec.target, where))
            if row is None:
                raise NotFound(f"{segments[i]} of {segments[i - 1]} does not exist")
            current = Resolved(spec.target, True, SETS[spec.target].model.id == row.id, row.id)
        else:
            current = Resolved(spec.target, False, where)
        i += 1
    return current, segments[i:]


def _id_max(set_name: str) -> int:
    """The largest id of a set: its key column's range (Observations are BIGINT, the others INTEGER)."""
    return INT64_MAX if set_name == "Observations" else INT32_MAX


def _parse_id(raw: str, set_name: str) -> int:
    text = raw[1:-1] if len(raw) > 1 and raw[0] == raw[-1] == "'" else raw
    try:
        return parse_int(text, "@iot.id", minimum=0, maximum=_id_max(set_name))
    except InvalidInput:
        raise StaBadRequest(f"{raw[:40]!r} is not an id of {set_name} (an integer from 0 to {_id_max(set_name)})") from None


# ----------------------------------------------------------------------------------------------- writes

def default_unit(session: Session, scope: Scope, code: str | None) -> Unit:
    """The unit a new Thing (or Location) belongs to: the one named, else the principal's only scope root."""
    if code:
        unit = session.scalar(select(Unit).where(Unit.code == str(code)))
        if unit is None:
            raise InvalidInput(f"unknown unit code {code!r}")
    elif not scope.all_units and len(scope.unit_paths) == 1:
        root = scope.unit_paths[0].rstrip("/").rsplit("/", 1)[-1]
        unit = session.scalar(select(Unit).where(Unit.code == root))
    else:
        unit = session.scalar(select(Unit).where(Unit.parent_code.is_(None)).order_by(Unit.code))
        if unit is None:
            raise InvalidInput("name the unit in properties.unit_code: no administrative units exist yet")
    scope.require_covers(unit.path, f"unit {unit.code}")
    return unit


def _require(set_name: str, data: dict) -> None:
    if not isinstance(data, dict):
        raise StaBadRequest(f"a {SETS[set_name].singular} must be a JSON object")
    missing = [p for p in SETS[set_name].required if data.get(p) is None]
    if missing:
        raise StaBadRequest(f"{SETS[set_name].singular}: missing required {', '.join(missing)}")


def _link_id(data) -> int | None:
    # An object carrying @iot.id names an existing entity (other properties in it are ignored, as FROST does).
    if isinstance(data, dict) and "@iot.id" in data:
        value = data["@iot.id"]  # a link names a Thing, Location, Sensor, … (never an Observation): INTEGER keys
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT32_MAX:
            return value
        if isinstance(value, str):
            return _parse_id(value, "linked entities")
        raise StaBadRequest(f"@iot.id {str(value)[:40]!r} is not an entity id (an integer from 0 to {INT32_MAX})")
    return None


class Writer:
    """Creates entities for one request, collecting what was created for MQTT notification."""

    def __init__(self, ctx: Ctx, actor: str = "system"):
        self.ctx = ctx
        self.session = ctx.session
        self.created: list[tuple[str, Any]] = []
        self.actor = actor
        #: Observations created in this request, handed to the ingest post-processing (rollups, rules).
        self.observations: list[Observation] = []

    def _add(self, set_name: str, row):
        self.session.add(row)
        self.session.flush()
        self.created.append((set_name, row))
        if set_name != "Observations":  # observations are data, not configuration: counted, not audited one by one
            audit.record(self.session, audit.Actor(self.actor), "sta.create", SETS[set_name].singular, str(row.id),
                         after={"name": getattr(row, "name", None)}, unit_path=getattr(row, "unit_path", None))
        return row

    # --- Things, Locations
    def thing(self, data: dict) -> Thing:
        _require("Things", data)
        props = data.get("properties") or {}
        if not isinstance(props, dict):
            raise StaBadRequest("Thing.properties must be an object")
        unit = default_unit(self.session, self.ctx.scope, props.get("unit_code"))
        device_type = props.get("device_type")
        if device_type is not None and device_type not in catalog.device_types():
            raise InvalidInput(f"unknown device type {device_type!r}", {"known": sorted(catalog.device_types())})
        props = {**props, "unit_code": unit.code}
        thing = self._add("Things", Thing(name=data["name"], description=data["description"], properties=props,
                                           device_type=device_type, building_code=props.get("building_code"),
                                           risk_point_code=props.get("risk_point_code"), unit_code=unit.code,
                                           unit_path=unit.path))
        locations = [self.location_ref(loc, thing.unit_path) for loc in data.get("Locations") or []]
        if locations:
            self.link_locations(thing, locations)
        for hl in data.get("HistoricalLocations") or []:
            self.historical_location({**hl, "Thing": {"@iot.id": thing.id}})
        for ds in data.get("Datastreams") or []:
            self.datastream({**ds, "Thing": {"@iot.id": thing.id}})
        return thing

    def thing_ref(self, data) -> Thing:
        link = _link_id(data)
        if link is not None:
            thing = get_one(self.ctx, "Things", link)
            self.ctx.scope.require_covers(thing.unit_path, f"Thing({link})")
            return thing
        return self.thing(data)

    def location_ref(self, data, unit_path: str | None = None) -> Location:
        link = _link_id(data)
        if link is not None:
            return get_one(self.ctx, "Locations", link)
        return self.location(data, unit_path)

    def location(self, data: dict, unit_path: str | None = None) -> Location:
        _require("Locations", data)
        if not isinstance(data["location"], dict) or "type" not in data["location"]:
            raise StaBadRequest("Location.location must be a GeoJSON geometry")
        _check_geojson(data["location"])
        if unit_path is None:
            unit_path = default_unit(self.session, self.ctx.scope, (data.get("properties") or {}).get("unit_code")).path
        loc = self._add("Locations", Location(name=data["name"], description=data["description"],
                                              encoding_type=data["encodingType"], location=data["location"],
                                              properties=data.get("properties"), unit_path=unit_path))
        for t in data.get("Things") or []:
            thing = self.thing_ref(t)
            self.link_locations(thing, [loc])
        return loc

    def link_locations(self, thing: Thing, locations: list[Location]) -> None:
        """Linking Locations to a Thing makes them its current ones and records a HistoricalLocation."""
        self.session.execute(delete(ThingLocation).where(ThingLocation.thing_id == thing.id))
        for loc in locations:
            self.session.add(ThingLocation(thing_id=thing.id, location_id=loc.id))
        hl = self._add("HistoricalLocations", HistoricalLocation(thing_id=thing.id, time_ms=now_ms(), unit_path=thing.unit_path))
        for loc in locations:
            self.session.add(HistoricalLocationLocation(historical_location_id=hl.id, location_id=loc.id))
        self.session.flush()

    def historical_location(self, data: dict) -> HistoricalLocation:
        _require("HistoricalLocations", data)
        if not data.get("Thing"):
            raise StaBadRequest("HistoricalLocation: missing required Thing")
        thing = self.thing_ref(data["Thing"])
        hl = self._add("HistoricalLocations", HistoricalLocation(thing_id=thing.id, time_ms=parse_instant(data["time"], "time"),
                                                                 unit_path=thing.unit_path))
        for loc in data.get("Locations") or []:
            self.session.add(HistoricalLocationLocation(historical_location_id=hl.id,
                                                        location_id=self.location_ref(loc, thing.unit_path).id))
        self.session.flush()
        return hl

    # --- Sensors, ObservedProperties, Datastreams
    def sensor(self, data) -> Sensor:
        link = _link_id(data)
        if link is not None:
            return get_one(self.ctx, "Sensors", link)
        _require_catalogue(self.ctx, "Sensors")
        _require("Sensors", data)
        return self._add("Sensors", Sensor(name=data["name"], description=data["description"], encoding_type=data["encodingType"],
                                           sensor_metadata=str(data["metadata"]), properties=data.get("properties")))

    def observed_property(self, data) -> ObservedProperty:
        link = _link_id(data)
        if link is not None:
            return get_one(self.ctx, "ObservedProperties", link)
        _require_catalogue(self.ctx, "ObservedProperties")
        _require("ObservedProperties", data)
        return self._add("ObservedProperties", ObservedProperty(name=data["name"], definition=data["definition"],
                                                                description=data["description"], properties=data.get("properties")))

    def datastream(self, data: dict) -> Datastream:
        _require("Datastreams", data)
        for nav in ("Thing", "Sensor", "ObservedProperty"):
            if not data.get(nav):
                raise StaBadRequest(f"Datastream: missing required {nav}")
        uom = data["unitOfMeasurement"]
        if not isinstance(uom, dict) or not {"name", "symbol", "definition"} <= set(uom):
            raise StaBadRequest("Datastream.unitOfMeasurement needs name, symbol and definition")
        thing = self.thing_ref(data["Thing"])
        props = data.get("properties") or {}
        stream = props.get("stream")
        if thing.device_type and stream:
            spec = catalog.device_types()[thing.device_type].stream(stream)
            if spec.unit.symbol != uom["symbol"]:
                raise InvalidInput(f"datastream {stream!r} of a {thing.device_type} is in {spec.unit.symbol!r}, not {uom['symbol']!r}")
        ds = self._add("Datastreams", Datastream(
            name=data["name"], description=data["description"], unit_of_measurement=uom,
            observation_type=data["observationType"], properties=data.get("properties"), thing_id=thing.id,
            sensor_id=self.sensor(data["Sensor"]).id, observed_property_id=self.observed_property(data["ObservedProperty"]).id,
            unit_path=thing.unit_path))
        for obs in data.get("Observations") or []:
            self.observation({**obs, "Datastream": {"@iot.id": ds.id}})
        return ds

    # --- Observations, FeaturesOfInterest
    def feature(self, data, unit_path: str) -> FeatureOfInterest:
        link = _link_id(data)
        if link is not None:
            return get_one(self.ctx, "FeaturesOfInterest", link)
        _require("FeaturesOfInterest", data)
        _check_geojson(data["feature"] if data["feature"].get("type") != "Feature" else data["feature"].get("geometry") or {})
        return self._add("FeaturesOfInterest", FeatureOfInterest(name=data["name"], description=data["description"],
                                                                 encoding_type=data["encodingType"], feature=data["feature"],
                                                                 properties=data.get("properties"), unit_path=unit_path))

    def feature_from_thing(self, ds: Datastream) -> int | None:
        """An Observation without FoI gets one made (or reused) from its Thing's current Location."""
        loc = self.session.scalar(select(Location).join(ThingLocation, ThingLocation.location_id == Location.id)
                                  .where(ThingLocation.thing_id == ds.thing_id).order_by(Location.id))
        if loc is None:
            return None
        existing = self.session.scalar(select(FeatureOfInterest.id).where(FeatureOfInterest.location_id == loc.id))
        if existing is not None:
            return existing
        foi = self._add("FeaturesOfInterest", FeatureOfInterest(name=loc.name, description=loc.description,
                                                                encoding_type=loc.encoding_type, feature=loc.location,
                                                                location_id=loc.id, unit_path=loc.unit_path))
        return foi.id

    def observation(self, data: dict, datastream_id: int | None = None, foi_id: int | None = None) -> Observation:
        from cityops.sensing import ingest

        if not isinstance(data, dict):
            raise StaBadRequest("an Observation must be a JSON object")
        if "result" not in data:
            raise StaBadRequest("Observation: missing required result")
        if datastream_id is None:
            if not data.get("Datastream"):
                raise StaBadRequest("Observation: missing required Datastream")
            datastream_id = _link_id(data["Datastream"])
            if datastream_id is None:
                raise StaBadRequest("Observation.Datastream must be a link {\"@iot.id\": …}")
        ds = get_one(self.ctx, "Datastreams", datastream_id)
        self.ctx.scope.require_covers(ds.unit_path, f"Datastream({datastream_id})")
        if foi_id is None and data.get("FeatureOfInterest"):
            foi_id = self.feature(data["FeatureOfInterest"], ds.unit_path).id
        elif foi_id is not None:
            get_one(self.ctx, "FeaturesOfInterest", foi_id)
        if foi_id is None:
            foi_id = self.feature_from_thing(ds)
        meta = ingest.meta_for(self.session, ds)
        row = ingest.check(meta, data.get("result"), data.get("phenomenonTime"), data.get("resultTime"),
                           (data.get("parameters") or {}).get("unit") if isinstance(data.get("parameters"), dict) else None)
        obs = Observation(datastream_id=ds.id, t_ms=row.t_ms, t_end_ms=row.t_end_ms, result_time_ms=row.result_time_ms,
                          result_num=row.value, result_json=row.result_json, result_quality=data.get("resultQuality"),
                          valid_time=data.get("validTime"), parameters=data.get("parameters"), foi_id=foi_id)
        existing = self.session.scalar(select(Observation).where(Observation.datastream_id == ds.id,
                                                                 Observation.t_ms == row.t_ms))
        if existing is not None:
            return existing  # a resend: idempotent, the first one stays
        self._add("Observations", obs)
        self.observations.append(obs)
        return obs


def _check_geojson(geom: dict) -> None:
    """The one GeoJSON reader (cityops.core.geojson), and WGS 84 longitude, latitude ranges."""
    import shapely

    from cityops.core.geojson import read_geometry

    g = read_geometry(geom)
    xy = shapely.get_coordinates(g)
    if not (np.all(np.abs(xy[:, 0]) <= 180) and np.all(np.abs(xy[:, 1]) <= 90)):
        # GeoJSON is WGS 84 longitude, latitude (RFC 7946): [999, 999] is nowhere.
        raise InvalidInput("invalid GeoJSON geometry: coordinates outside longitude -180…180, latitude -90…90")


CREATORS = {
    "Things": lambda w, d, **k: w.thing(d),
    "Locations": lambda w, d, **k: w.location(d),
    "HistoricalLocations": lambda w, d, **k: w.historical_location(d),
    "Sensors": lambda w, d, **k: w.sensor(d) if _link_id(d) is None else (_ for _ in ()).throw(StaBadRequest("POST a new Sensor")),
    "ObservedProperties": lambda w, d, **k: w.observed_property(d),
    "Datastreams": lambda w, d, **k: w.datastream(d),
    "Observations": lambda w, d, **k: w.observation(d, **k),
    "FeaturesOfInterest": lambda w, d, **k: w.feature(d, default_unit(w.session, w.ctx.scope, None).path),
}


def create(writer: Writer, set_name: str, data: dict, parent: Resolved | None = None):
    """POST /{Set} or POST /{Parent}({id})/{Set}: the parent link is implied by the path."""
    kwargs = {}
    if parent is not None and parent.one:
        if set_name == "Observations" and parent.set_name == "Datastreams":
            kwargs["datastream_id"] = parent.entity_id
        elif set_name == "Observations" and parent.set_name == "FeaturesOfInterest":
            kwargs["foi_id"] = parent.entity_id
        elif set_name == "Datastreams" and parent.set_name == "Things":
            data = {**data, "Thing": {"@iot.id": parent.entity_id}}
        elif set_name == "Locations" and parent.set_name == "Things":
            data = {**data, "Things": [{"@iot.id": parent.entity_id}]}
        elif set_name == "HistoricalLocations" and parent.set_name == "Things":
            data = {**data, "Thing": {"@iot.id": parent.entity_id}}
        else:
            raise StaBadRequest(f"cannot create {set_name} under {parent.set_name}")
    return CREATORS[set_name](writer, data, **kwargs)


def keeps_catalogue(principal) -> bool:
    """Sensors and ObservedProperties are one catalogue shared by every township's devices: only a
    district-wide principal holding ``sensing.catalogue`` creates or changes them (not township operators,
    not device keys, which link existing entries by ``@iot.id``)."""
    return principal.role.allows("sensing.catalogue") and principal.scope.district_wide


def _require_catalogue(ctx: Ctx, set_name: str) -> None:
    if not ctx.catalogue:
        raise Forbidden(f"{set_name} are the district's shared catalogue: only a district-wide principal with "
                        f"sensing.catalogue creates or changes them; link an existing one by @iot.id")


def require_write(ctx: Ctx, set_name: str, row) -> None:
    if set_name in CATALOGUE:
        _require_catalogue(ctx, set_name)
        return
    if set_name == "Observations":
        ds = ctx.session.get(Datastream, row.datastream_id)
        ctx.scope.require_covers(ds.unit_path, f"Observation({row.id})")
        return
    ctx.scope.require_covers(row.unit_path, f"{SETS[set_name].singular}({row.id})")


def update(ctx: Ctx, set_name: str, row, data: dict, replace: bool = False, actor: str = "system") -> None:
    """PATCH (merge) or PUT (replace) the plain properties of an entity."""
    if not isinstance(data, dict):
        raise StaBadRequest("the body must be a JSON object")
    e = SETS[set_name]
    require_write(ctx, set_name, row)
    if replace:
        _require(set_name, data)
    for name, value in data.items():
        if name.startswith("@iot") or name in e.navs:
            continue
        if name not in e.columns or name == "id":
            raise StaBadRequest(f"{e.singular} has no writable property {name!r}")
        if set_name == "Observations" and name == "result":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row.result_num, row.result_json = float(value), None
            else:
                row.result_num, row.result_json = None, value
            continue
        if name in e.times:
            if set_name == "Observations" and name == "phenomenonTime":
                row.t_ms, row.t_end_ms = parse_time(value, name)
            elif set_name == "HistoricalLocations":
                row.time_ms = parse_instant(value, name)
            else:
                raise StaBadRequest(f"{name} of a {e.singular} is maintained by the server")
            continue
        if name == "properties" and set_name == "Things":
            props = value or {}
            props["unit_code"] = row.unit_code
            row.properties = props
            row.building_code, row.risk_point_code = props.get("building_code"), props.get("risk_point_code")
            continue
        if name in ("location", "feature"):
            _check_geojson(value)
        setattr(row, e.columns[name], value)
    if set_name == "Things" and "Locations" in data:
        w = Writer(ctx)
        w.link_locations(row, [w.location_ref(loc, row.unit_path) for loc in data["Locations"]])
    if set_name != "Observations":
        audit.record(ctx.session, audit.Actor(actor), "sta.replace" if replace else "sta.update", e.singular, str(row.id),
                     after={k: v for k, v in data.items() if not k.startswith("@")}, unit_path=getattr(row, "unit_path", None))
    ctx.session.flush()


def delete_entity(ctx: Ctx, set_name: str, row, actor: str = "system") -> None:
    require_write(ctx, set_name, row)
    audit.record(ctx.session, audit.Actor(actor), "sta.delete", SETS[set_name].singular, str(row.id),
                 unit_path=getattr(row, "unit_path", None))
    if set_name in CATALOGUE:
        col = Datastream.sensor_id if set_name == "Sensors" else Datastream.observed_property_id
        # Integrity rule: deleting a Sensor/ObservedProperty deletes the Datastreams that need it.
        for ds in ctx.session.scalars(select(Datastream).where(col == row.id)):
            ctx.session.delete(ds)
        ctx.session.flush()
    ctx.session.delete(row)
    ctx.session.flush()


#: Entity properties a JSON Patch may not touch (they are the server's).
_SERVER_KEYS = ("@iot.id", "@iot.selfLink")


def json_patch(set_name: str, row, operations) -> dict:
    """A JSON Patch (RFC 6902, ``application/json-patch+json``, what frost-sta-client's ``patch()`` sends) applied
    to the entity as it is → the properties it changes, for ``update`` (by the ``jsonpatch`` library)."""
    import jsonpatch
    import jsonpointer

    if not isinstance(operations, list):
        raise StaBadRequest("a JSON Patch is a JSON array of operations")
    current = {k: v for k, v in entity_json("", set_name, row).items() if "@iot." not in k}
    try:
        patched = jsonpatch.JsonPatch(operations).apply(current)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, AttributeError, KeyError) as exc:
        raise StaBadRequest(f"the JSON Patch cannot be applied: {exc}") from None
    if not isinstance(patched, dict) or any(k in patched for k in _SERVER_KEYS):
        raise StaBadRequest("a JSON Patch may change the entity's properties, not replace it or its id")
    return {k: patched.get(k) for k in set(current) | set(patched) if patched.get(k) != current.get(k)}


def datastream_time_bounds(session: Session, ids: set[int]) -> None:
    """Keep Datastream.phenomenonTime (and the latest value) in step with its Observations."""
    for ds_id in ids:
        lo, hi = session.execute(select(func.min(Observation.t_ms), func.max(func.coalesce(Observation.t_end_ms, Observation.t_ms)))
                                 .where(Observation.datastream_id == ds_id)).one()
        last = session.execute(select(Observation.t_ms, Observation.result_num).where(Observation.datastream_id == ds_id)
                               .order_by(Observation.t_ms.desc()).limit(1)).first()
        ds = session.get(Datastream, ds_id)
        ds.phenomenon_start_ms, ds.phenomenon_end_ms = lo, hi
        if last:
            ds.last_ms, ds.last_value = last
    session.flush()


__all__ = ["SETS", "Ctx", "Options", "Writer", "create", "update", "delete_entity", "parse_options", "query_collection",
           "render", "resolve_path", "entity_json", "value_of", "get_one", "StaBadRequest", "and_", "datetime"]
