"""Domain logic of the layer catalogue: create, import (versioned, all-or-nothing, streamed), roll back,
export. No HTTP here; writes happen in the caller's transaction and are audited."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import shapely
from sqlalchemy import Connection, func, insert, literal, or_, select
from sqlalchemy.orm import Session

from cityops.base import catalogue, featurestore, importing, layerfiles
from cityops.base.categories import load_categories
from cityops.base.models import Layer, LayerVersion
from cityops.core import audit
from cityops.core.errors import Conflict, InvalidInput, NotFound
from cityops.core.storage import storage_of
from cityops.core.types import utcnow
from cityops.identity.scope import Scope
from cityops.org.models import Department, Unit

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,47}$")
#: Collection ids of /ogc that are not layers (cityops.housing.collection).
RESERVED_KEYS = ("buildings",)
EXPORT_BATCH = 10_000


def layer_snapshot(layer: Layer) -> dict:
    return {
        "key": layer.key, "title_zh": layer.title_zh, "title_en": layer.title_en,
        "description_zh": layer.description_zh, "description_en": layer.description_en,
        "category": layer.category, "owner_department": layer.owner_department, "source": layer.source,
        "geometry_type": layer.geometry_type, "attribute_schema": layer.attribute_schema,
        "source_crs": layer.source_crs, "editable": layer.editable, "public_read": layer.public_read, "current_version": layer.current_version,
        "feature_count": layer.feature_count, "bounds": layer.bounds, "unit_code": layer.unit_code,
        "updated_at": layer.updated_at.isoformat() if layer.updated_at else None,
    }


def version_snapshot(v: LayerVersion) -> dict:
    return {"version": v.version, "at": v.at.isoformat(), "actor": v.actor, "action": v.action,
            "source_name": v.source_name, "added": v.added, "removed": v.removed, "repaired": v.repaired,
            "feature_count": v.feature_count, "restores": v.restores, "note": v.note}


#: The scope of an anonymous reader of the standard interfaces: no unit, so public-read layers only.
PUBLIC = Scope()


def list_layers(session: Session, scope: Scope, category: str | None = None) -> list[Layer]:
    """The layers ``scope`` sees, and the public-read ones (all a reader needs; writes check the scope)."""
    stmt = select(Layer).where(or_(scope.sees_clause(Layer.unit_path), Layer.public_read.is_(True))) \
        .order_by(Layer.category, Layer.key)
    if category:
        load_categories().get(category)
        stmt = stmt.where(Layer.category.startswith(category, autoescape=True))
    return list(session.scalars(stmt))


def get_layer(session: Session, key: str, scope: Scope) -> Layer:
    layer = session.scalar(select(Layer).where(Layer.key == key))
    if layer is None or not (scope.sees(layer.unit_path) or layer.public_read):
        raise NotFound(f"layer {key!r} not found")
    return layer


def _writable(session: Session, key: str, scope: Scope) -> Layer:
    layer = get_layer(session, key, scope)
    scope.require_covers(layer.unit_path, f"layer {key}")
    return layer


def create_layer(session: Session, actor: audit.Actor, scope: Scope, data: dict) -> Layer:
    key = data["key"]
    if not KEY_PATTERN.match(key):
        raise InvalidInput(f"layer key {key!r} must be 2–48 characters of a–z, 0–9 and _, starting with a letter")
    if session.scalar(select(Layer.id).where(Layer.key == key)) is not None or key in RESERVED_KEYS:
        raise Conflict(f"layer {key!r} already exists" if key not in RESERVED_KEYS else
                       f"{key!r} names the buildings registry's collection in /ogc; choose another key")
    category = load_categories().get(data["category"])
    if category.parent is None:
        raise InvalidInput(f"category {category.code} is a major category; choose one of its minor categories")
    geometry_type = data.get("geometry_type", "GEOMETRY").upper()
    if geometry_type not in featurestore.GEOMETRY_TYPES:
        raise InvalidInput(f"unknown geometry type {geometry_type!r}; use one of {', '.join(featurestore.GEOMETRY_TYPES)}")
    unit = session.scalar(select(Unit).where(Unit.code == data["unit_code"])) if data.get("unit_code") else \
        session.scalar(select(Unit).where(Unit.level == "district").order_by(Unit.code))
    if unit is None:
        raise InvalidInput(f"unknown unit {data.get('unit_code')!r}" if data.get("unit_code") else "no district exists yet")
    scope.require_covers(unit.path, f"unit {unit.code}")
    owner = data.get("owner_department")
    if owner and session.scalar(select(Department.id).where(Department.code == owner)) is None:
        raise InvalidInput(f"unknown department {owner!r}")
    layer = Layer(key=key, title_zh=data["title_zh"], title_en=data.get("title_en") or data["title_zh"],
                  description_zh=data.get("description_zh") or "", description_en=data.get("description_en") or "",
                  category=category.code, owner_department=owner, source=data.get("source") or "",
                  geometry_type=geometry_type, attribute_schema=[], editable=bool(data.get("editable", False)),
                  public_read=bool(data.get("public_read", False)),
                  current_version=0, feature_count=0, unit_code=unit.code, unit_path=unit.path)
    session.add(layer)
    session.flush()
    featurestore.create(session.connection(), key, geometry_type, layer.title_zh)
    audit.record(session, actor, "layer.create", "layer", key, after=layer_snapshot(layer), unit_path=layer.unit_path)
    catalogue.changed(session, key, "created")
    return layer


def update_layer(session: Session, actor: audit.Actor, scope: Scope, key: str, changes: dict) -> Layer:
    layer = _writable(session, key, scope)
    before = layer_snapshot(layer)
    if changes.get("category") is not None:
        category = load_categories().get(changes["category"])
        if category.parent is None:
            raise InvalidInput(f"category {category.code} is a major category; choose one of its minor categories")
        layer.category = category.code
    if changes.get("owner_department") is not None:
        if session.scalar(select(Department.id).where(Department.code == changes["owner_department"])) is None:
            raise InvalidInput(f"unknown department {changes['owner_department']!r}")
        layer.owner_department = changes["owner_department"]
    for name in ("title_zh", "title_en", "description_zh", "description_en", "source", "editable", "public_read"):
        if changes.get(name) is not None:
            setattr(layer, name, changes[name])
    layer.updated_at = utcnow()
    session.flush()
    audit.record(session, actor, "layer.update", "layer", key, before=before, after=layer_snapshot(layer), unit_path=layer.unit_path)
    catalogue.changed(session, key, "updated")
    return layer


def delete_layer(session: Session, actor: audit.Actor, scope: Scope, key: str) -> None:
    layer = _writable(session, key, scope)
    before = layer_snapshot(layer)
    featurestore.drop(session.connection(), layer.key, layer.geometry_type)
    session.delete(layer)
    session.flush()
    audit.record(session, actor, "layer.delete", "layer", key, before=before, unit_path=layer.unit_path)
    catalogue.changed(session, key, "deleted")


def versions(session: Session, key: str, scope: Scope) -> list[LayerVersion]:
    layer = get_layer(session, key, scope)
    return list(session.scalars(select(LayerVersion).where(LayerVersion.layer_id == layer.id).order_by(LayerVersion.version.desc())))


_merge_schema = importing.merge_schema


def _bounds(conn: Connection, table) -> list[float] | None:
    return storage_of(conn).extent(conn, table.name)


def import_file(
    session: Session,
    actor: audit.Actor,
    scope: Scope,
    key: str,
    path: Path,
    *,
    fmt: str | None = None,
    crs: str | None = None,
    mode: str = "replace",
    source_layer: str | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    opened: layerfiles.OpenedFile | None = None,
) -> dict:
    """Import a file as the layer's next version. Streams the file in batches; any error rejects the whole
    import (ValidationFailed with a report naming the records) and nothing is written. Unambiguous
    geometry repairs are applied and reported as warnings. ``opened``: the same file opened already (its reading
    begun while the caller started up); used when it is that file with these options. The writes are Core
    statements (``importing.import_file``); a ``Layer`` of this session is expired, to be read again."""
    report = importing.import_file(session, actor, scope, key, path, fmt=fmt, crs=crs, mode=mode,
                                   source_layer=source_layer, dry_run=dry_run, progress=progress, opened=opened,
                                   announce=catalogue.announce)
    for obj in list(session.identity_map.values()):
        if isinstance(obj, (Layer, LayerVersion)):
            session.expire(obj)
    return report


_retire = importing.retire


def rollback(session: Session, actor: audit.Actor, scope: Scope, key: str, target: int) -> LayerVersion:
    """Make the features of version ``target`` current again, as a new version (history is kept)."""
    layer = _writable(session, key, scope)
    if not 0 <= target < layer.current_version:
        raise InvalidInput(f"layer {key} is at version {layer.current_version}; roll back to a version from 0 to "
                           f"{layer.current_version - 1}")
    conn = session.connection()
    current, history = featurestore.tables(layer.key, layer.geometry_type)
    version = layer.current_version + 1
    removed = _retire(conn, current, history, current.c.v_from > target, version)
    alive = (history.c.v_from <= target) & (history.c.v_to > target)
    added = conn.execute(select(func.count()).select_from(history).where(alive)).scalar()
    conn.execute(insert(current).from_select(
        ["id", "fid", "properties", "geom", "v_from"],
        select(history.c.feature_id, history.c.fid, history.c.properties, history.c.geom, literal(version)).where(alive),
    ))
    layer.feature_count = conn.execute(select(func.count()).select_from(current)).scalar()
    layer.bounds = _bounds(conn, current)
    layer.current_version = version
    layer.updated_at = utcnow()
    entry = LayerVersion(layer_id=layer.id, version=version, actor=actor.name, action="rollback", added=added,
                         removed=removed, repaired=0, feature_count=layer.feature_count, restores=target)
    session.add(entry)
    session.flush()
    audit.record(session, actor, "layer.rollback", "layer", key, unit_path=layer.unit_path,
                 after={"version": version, "restores": target, "added": added, "removed": removed})
    catalogue.version_created(session, layer, "rollback")
    return entry


def iter_features(session: Session, layer: Layer, *, bbox: tuple[float, float, float, float] | None = None,
                  limit: int | None = None, offset: int = 0,
                  batch_size: int = EXPORT_BATCH) -> Iterator[tuple[list, list[dict], np.ndarray]]:
    """Current features in id order as (fids, properties, geometries) batches; ``bbox`` keeps those that
    intersect it (the same answer on both backends)."""
    current, _ = featurestore.tables(layer.key, layer.geometry_type)
    conn = session.connection()
    stmt = select(current.c.id, current.c.fid, current.c.properties, current.c.geom).order_by(current.c.id)
    box = None
    if bbox is not None:
        box = shapely.box(*bbox)
        stmt = storage_of(conn).bbox_prefilter(stmt, current.name, current.c.id, current.c.geom, bbox)
    to_skip, remaining = 0, None
    if box is None and limit is not None:
        stmt = stmt.limit(limit).offset(offset)
    elif limit is not None or offset:
        to_skip, remaining = offset, limit  # paging after the exact bbox test
    # Options on the statement, not the connection: Connection.execution_options() changes the session's
    # connection in place, and a server-side cursor would stay on for the writes that follow.
    result = conn.execute(stmt.execution_options(stream_results=True, yield_per=batch_size))
    for chunk in result.partitions(batch_size):
        fids = [r.fid if r.fid is not None else str(r.id) for r in chunk]
        props = [r.properties for r in chunk]
        geoms = np.array([r.geom for r in chunk], dtype=object)
        if box is not None:
            keep = shapely.intersects(geoms, box)
            fids, props, geoms = [f for f, k in zip(fids, keep) if k], [p for p, k in zip(props, keep) if k], geoms[keep]
            cut = min(to_skip, len(geoms))
            fids, props, geoms, to_skip = fids[cut:], props[cut:], geoms[cut:], to_skip - cut
            if remaining is not None:
                fids, props, geoms = fids[:remaining], props[:remaining], geoms[:remaining]
                remaining -= len(geoms)
        if len(geoms):
            yield fids, props, geoms
        if remaining == 0:
            break


def export_layer(session: Session, scope: Scope, key: str, target: Path, fmt: str, *, crs: str = "EPSG:4490",
                 bbox: tuple[float, float, float, float] | None = None) -> Path:
    layer = get_layer(session, key, scope)
    return layerfiles.write_layer_file(target, fmt, iter_features(session, layer, bbox=bbox), layer.attribute_schema,
                                       layer.geometry_type, crs=crs, layer_name=key)


def load_features(session: Session, actor: audit.Actor, scope: Scope, key: str,
                  batches: Iterator[tuple[list, list[dict], np.ndarray]], *, source_name: str,
                  schema: list[dict]) -> LayerVersion:
    """Append generated features (canonical CRS, already valid) to a layer as its next version, through the
    same bulk writer as file imports; for producers that hold features in memory (the demo generator, other
    capabilities' loaders). ``batches`` yields (fids, properties, geometries); ``schema`` is the attribute
    schema ([{"name", "type"}]). Audited; in the caller's transaction."""
    layer = _writable(session, key, scope)
    conn = session.connection()
    current, _ = featurestore.tables(layer.key, layer.geometry_type)
    version = layer.current_version + 1
    added = 0
    with featurestore.BulkWriter(conn, current) as bulk:
        for fids, properties, geoms in batches:
            added += bulk.insert(fids, properties, geoms, version)
    layer.feature_count = conn.execute(select(func.count()).select_from(current)).scalar()
    layer.bounds = _bounds(conn, current)
    layer.attribute_schema = _merge_schema(layer.attribute_schema, schema)
    layer.source_crs = layer.source_crs or "EPSG:4490"
    layer.current_version = version
    layer.updated_at = utcnow()
    entry = LayerVersion(layer_id=layer.id, version=version, actor=actor.name, action="import_append",
                         source_name=source_name, added=added, removed=0, repaired=0, feature_count=layer.feature_count)
    session.add(entry)
    session.flush()
    audit.record(session, actor, "layer.import", "layer", key, unit_path=layer.unit_path,
                 after={"version": version, "mode": "append", "added": added, "source": source_name})
    catalogue.version_created(session, layer, "import_append")
    return entry
