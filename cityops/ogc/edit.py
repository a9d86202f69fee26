"""OGC API – Features Part 4 (Create, Replace, Update, Delete) on editable layers. No HTTP here.

Every accepted edit is one new version of the layer, exactly like an import: the superseded row goes to
``layer_<key>_history`` with [v_from, v_to), the new row is current from the new version, a
``LayerVersion`` (action ``edit``) records who/when/what counts, and the audit log gets before/after — all
in the caller's transaction, so a layer rollback also undoes feature edits.

Who may edit: the principal needs ``ogc.edit``, the layer must be editable, and either the principal's
scope covers the layer's unit, or every geometry involved (before and after the edit) lies wholly in units
the scope covers — so a township operator may edit district layers' features inside the township only.
Checks happen before any write, so a refused edit changes nothing.
"""

from __future__ import annotations


import numpy as np
import shapely
from sqlalchemy import func, insert, literal, select
from sqlalchemy.orm import Session

from cityops.base import catalogue, featurestore, layerfiles
from cityops.base.models import Layer, LayerVersion
from cityops.core import audit
from cityops.core.errors import CityOpsError, Conflict, Forbidden, InvalidGeometry, InvalidInput, NotFound
from cityops.core.geojson import read_geometry
from cityops.core.types import utcnow
from cityops.identity.scope import Scope
from cityops.ogc import service
from cityops.ogc.filtering import to_canonical_geometry

MAX_VERTICES = 100_000
_PY_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
             "datetime": (str,), "date": (str,)}


class NotEditable(CityOpsError):
    """The layer is read-only (HTTP 405 with an Allow header)."""

    status_code = 405
    code = "MethodNotAllowed"


class PreconditionFailed(CityOpsError):
    status_code = 412
    code = "PreconditionFailed"


def may_edit(layer: Layer, scope: Scope, permitted: bool) -> bool:
    """What OPTIONS advertises: the layer is editable and the principal holds ``ogc.edit`` and sees it
    (per-feature location is checked on each edit)."""
    return bool(layer.editable and permitted and scope.sees(layer.unit_path))


def _check_editable(layer: Layer) -> None:
    if not layer.editable:
        raise NotEditable(f"collection {layer.key!r} is read-only (not an editable layer)")


def _check_location(scope: Scope, layer: Layer, geoms: list, locator) -> None:
    """On a layer outside the scope, every geometry (before and after the edit) must lie wholly in the
    scope's units: each point of a MultiPoint, each part of a polygon, not one representative point."""
    if scope.covers(layer.unit_path):
        return
    area = locator.area(scope.unit_paths) if locator is not None and scope.unit_paths else None
    for geom in geoms:
        if geom is None:
            raise Forbidden(f"layer {layer.key} belongs to a unit outside your scope; only features located "
                            "in your units may be edited")
        if area is None or not area.covers(geom):
            raise Forbidden(f"the feature's geometry lies wholly or partly outside your scope; layer {layer.key} "
                            "belongs to a unit outside your scope, so only features wholly inside your units may be edited")


def parse_feature(layer: Layer, body, crs) -> tuple[dict, object]:
    """A GeoJSON Feature (geometry in ``crs``, authority axis order) → (properties, canonical geometry).
    400 naming what is wrong: not a Feature, bad or invalid geometry, wrong type, bad property values."""
    if not isinstance(body, dict) or body.get("type") != "Feature":
        raise InvalidInput("the body must be one GeoJSON Feature ({\"type\": \"Feature\", \"geometry\": …, "
                           "\"properties\": {…}})")
    if "geometry" not in body:  # RFC 7946 §3.2: a Feature has a geometry member, null when it has none
        raise InvalidInput("the Feature has no 'geometry' member; send the geometry, or \"geometry\": null for none")
    props = body.get("properties")
    if props is None:
        props = {}
    if not isinstance(props, dict):
        raise InvalidInput("properties must be a JSON object")
    geom = parse_geometry(layer, body.get("geometry"), crs)
    return check_properties(layer, props), geom


def parse_geometry(layer: Layer, raw, crs):
    if raw is None:
        return None
    geom = read_geometry(raw, max_vertices=MAX_VERTICES)
    geom = to_canonical_geometry(geom, crs, "Content-Crs")
    issues: list[layerfiles.Issue] = []
    [out] = layerfiles.conform(np.array([geom], dtype=object), layer.geometry_type, 0, [None], issues)
    if issues:
        raise InvalidGeometry(f"geometry is a {geom.geom_type}; collection {layer.key} holds {layer.geometry_type}")
    return out


def check_properties(layer: Layer, props: dict) -> dict:
    """Known attributes must have their declared type (or null); new names are added to the schema."""
    declared = {f["name"]: f.get("type", "string") for f in layer.attribute_schema or []}
    wrong = []
    for name, value in props.items():
        kind = declared.get(name)
        if value is None or kind is None or kind == "json":
            continue
        ok = isinstance(value, _PY_TYPES.get(kind, (object,)))
        if kind in ("integer", "number") and isinstance(value, bool):
            ok = False
        if kind == "integer" and isinstance(value, float) and value.is_integer():
            ok = True
        if not ok:
            wrong.append(f"{name} must be {kind}, got {type(value).__name__}")
    if wrong:
        raise InvalidInput("invalid properties: " + "; ".join(wrong), details={"properties": wrong})
    return props


def _extend_schema(layer: Layer, props: dict) -> None:
    names = {f["name"] for f in layer.attribute_schema or []}
    added = []
    for name, value in props.items():
        if name in names or value is None:
            continue
        kind = ("boolean" if isinstance(value, bool) else "integer" if isinstance(value, int)
                else "number" if isinstance(value, float) else "string" if isinstance(value, str) else "json")
        added.append({"name": name, "type": kind})
    if added:
        layer.attribute_schema = list(layer.attribute_schema or []) + added


def _extend_bounds(layer: Layer, geom) -> None:
    if geom is None:
        return
    minx, miny, maxx, maxy = geom.bounds
    if layer.bounds:
        a, b, c, d = layer.bounds
        minx, miny, maxx, maxy = min(a, minx), min(b, miny), max(c, maxx), max(d, maxy)
    layer.bounds = [float(minx), float(miny), float(maxx), float(maxy)]


def _snapshot(found: service.Found | None) -> dict | None:
    if found is None:
        return None
    return {"id": found.fid, "properties": found.properties,
            "geometry": shapely.to_wkt(found.geom, rounding_precision=9) if found.geom is not None else None}


def _new_version(session: Session, layer: Layer, actor: audit.Actor, added: int, removed: int, note: str) -> int:
    conn = session.connection()
    current, _ = featurestore.tables(layer.key, layer.geometry_type)
    version = layer.current_version + 1
    layer.current_version = version
    layer.feature_count = conn.execute(select(func.count()).select_from(current)).scalar()
    layer.updated_at = utcnow()
    session.add(LayerVersion(layer_id=layer.id, version=version, actor=actor.name, action="edit",
                             source_name="OGC API", added=added, removed=removed, repaired=0,
                             feature_count=layer.feature_count, note=note))
    catalogue.version_created(session, layer, "edit")
    return version


def _retire(conn, layer: Layer, row_id: int, version: int) -> None:
    current, history = featurestore.tables(layer.key, layer.geometry_type)
    cols = [current.c.id, current.c.fid, current.c.properties, current.c.geom, current.c.v_from, literal(version)]
    conn.execute(insert(history).from_select(["feature_id", "fid", "properties", "geom", "v_from", "v_to"],
                                             select(*cols).where(current.c.id == row_id)))


def _existing(session: Session, layer: Layer, feature_id: str, if_match: str | None) -> service.Found:
    found = service.feature(session, layer, feature_id)
    if found is None:
        raise NotFound(f"feature {feature_id!r} not found in collection {layer.key!r}")
    if if_match is not None and if_match.strip() != "*" and found.etag not in [t.strip() for t in if_match.split(",")]:
        raise PreconditionFailed(f"feature {feature_id!r} has changed (ETag {found.etag}); fetch it again")
    return found


def create(session: Session, actor: audit.Actor, scope: Scope, layer: Layer, body, crs, locator) -> service.Found:
    _check_editable(layer)
    if isinstance(body, dict) and body.get("type") == "FeatureCollection":
        raise InvalidInput("POST one GeoJSON Feature per request, not a FeatureCollection")
    props, geom = parse_feature(layer, body, crs)
    _check_location(scope, layer, [geom], locator)
    fid = body.get("id")
    if fid is not None:
        fid = str(fid)
        if service.feature(session, layer, fid) is not None:
            raise Conflict(f"feature {fid!r} already exists in collection {layer.key!r}")
    version = layer.current_version + 1
    conn = session.connection()
    current, _ = featurestore.tables(layer.key, layer.geometry_type)
    row_id = conn.execute(insert(current).values(fid=fid, properties=props, geom=geom, v_from=version)
                          .returning(current.c.id)).scalar_one()
    _extend_schema(layer, props)
    _extend_bounds(layer, geom)
    _new_version(session, layer, actor, 1, 0, f"create {fid or row_id}")
    created = service.Found(row_id, fid if fid is not None else str(row_id), props, geom, version)
    session.flush()
    audit.record(session, actor, "ogc.feature.create", "feature", f"{layer.key}/{created.fid}",
                 after=_snapshot(created), unit_path=layer.unit_path)
    return created


def replace(session: Session, actor: audit.Actor, scope: Scope, layer: Layer, feature_id: str, body, crs, locator,
            if_match: str | None = None) -> service.Found:
    _check_editable(layer)
    old = _existing(session, layer, feature_id, if_match)
    props, geom = parse_feature(layer, body, crs)
    if body.get("id") is not None and str(body["id"]) != old.fid:
        raise InvalidInput(f"the body's id {body['id']!r} differs from the feature id {old.fid!r}")
    return _write(session, actor, scope, layer, old, props, geom, locator, "replace")


def update(session: Session, actor: audit.Actor, scope: Scope, layer: Layer, feature_id: str, patch, crs, locator,
           if_match: str | None = None) -> service.Found:
    """JSON merge patch (RFC 7396) of a feature: ``properties`` members merge (null removes one);
    ``geometry`` replaces the geometry when present."""
    _check_editable(layer)
    if not isinstance(patch, dict):
        raise InvalidInput("a PATCH body must be a JSON object (JSON merge patch of a GeoJSON Feature)")
    unknown = sorted(set(patch) - {"type", "id", "geometry", "properties", "links"})
    if unknown:
        raise InvalidInput(f"unknown member(s) in the patch: {', '.join(unknown)}")
    old = _existing(session, layer, feature_id, if_match)
    if patch.get("id") is not None and str(patch["id"]) != old.fid:
        raise InvalidInput(f"the patch's id {patch['id']!r} differs from the feature id {old.fid!r}")
    props = dict(old.properties)
    changes = patch.get("properties", {})
    if changes is None:
        props = {}
    elif not isinstance(changes, dict):
        raise InvalidInput("properties in a merge patch must be an object (or null)")
    else:
        for name, value in changes.items():
            if value is None:
                props.pop(name, None)
            else:
                props[name] = value
    geom = parse_geometry(layer, patch["geometry"], crs) if "geometry" in patch else old.geom
    return _write(session, actor, scope, layer, old, check_properties(layer, props), geom, locator, "update")


def _write(session, actor, scope, layer, old: service.Found, props, geom, locator, what: str) -> service.Found:
    _check_location(scope, layer, [old.geom, geom], locator)
    conn = session.connection()
    current, _ = featurestore.tables(layer.key, layer.geometry_type)
    version = layer.current_version + 1
    _retire(conn, layer, old.id, version)
    conn.execute(current.update().where(current.c.id == old.id).values(properties=props, geom=geom, v_from=version))
    _extend_schema(layer, props)
    _extend_bounds(layer, geom)
    _new_version(session, layer, actor, 1, 1, f"{what} {old.fid}")
    new = service.Found(old.id, old.fid, props, geom, version)
    session.flush()
    audit.record(session, actor, f"ogc.feature.{what}", "feature", f"{layer.key}/{old.fid}",
                 before=_snapshot(old), after=_snapshot(new), unit_path=layer.unit_path)
    return new


def delete(session: Session, actor: audit.Actor, scope: Scope, layer: Layer, feature_id: str, locator,
           if_match: str | None = None) -> None:
    _check_editable(layer)
    old = _existing(session, layer, feature_id, if_match)
    _check_location(scope, layer, [old.geom], locator)
    conn = session.connection()
    current, _ = featurestore.tables(layer.key, layer.geometry_type)
    version = layer.current_version + 1
    _retire(conn, layer, old.id, version)
    conn.execute(current.delete().where(current.c.id == old.id))
    _new_version(session, layer, actor, 0, 1, f"delete {old.fid}")
    session.flush()
    audit.record(session, actor, "ogc.feature.delete", "feature", f"{layer.key}/{old.fid}",
                 before=_snapshot(old), unit_path=layer.unit_path)
