"""A file imported as a layer's next version (versioned, all-or-nothing, streamed), in Core statements only.

The import's own writes (the layer row, its version entry, the audit entry, the outbox event) are Core statements
on the tables, not ORM objects: a bulk import (``cityops import-layer``) then neither imports the ORM models nor
configures their mappers, whose flush needs every table a foreign key names (``layers.unit_code`` → ``units``)
loaded. The stored rows are those the ORM wrote: same columns, same types (``JSONText``, ``UTCDateTime``), same
transaction. ``service.import_file`` is this function for callers holding ORM objects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, column, func, insert, literal, select, table, update
from sqlalchemy.types import Boolean, Integer, Text

from cityops.base import featurestore, layerfiles
from cityops.core.errors import InvalidInput, NotFound, ValidationFailed
from cityops.core.storage import storage_of
from cityops.core.types import JSONText, UTCDateTime, utcnow

MAX_REPORTED_ISSUES = 200

#: The columns of ``layers``, ``layer_versions`` and ``audit_log`` an import reads or writes (the schema is the
#: models' and the migrations'; these name a part of it for Core statements).
LAYERS = table("layers", column("id", Integer), column("key", Text), column("geometry_type", Text),
               column("attribute_schema", JSONText), column("source_crs", Text), column("public_read", Boolean),
               column("current_version", Integer), column("feature_count", Integer), column("bounds", JSONText),
               column("unit_path", Text), column("updated_at", UTCDateTime))
LAYER_VERSIONS = table("layer_versions", column("id", Integer), column("layer_id", Integer), column("version", Integer),
                       column("at", UTCDateTime), column("actor", Text), column("action", Text),
                       column("source_name", Text), column("added", Integer), column("removed", Integer),
                       column("repaired", Integer), column("feature_count", Integer))
AUDIT_LOG = table("audit_log", column("id", Integer), column("at", UTCDateTime), column("actor_id", Integer),
                  column("actor", Text), column("action", Text), column("entity", Text), column("entity_key", Text),
                  column("unit_path", Text), column("before", JSONText), column("after", JSONText),
                  column("request_id", Text))


def writable_layer(conn, key: str, scope):
    """The layer's row, if ``scope`` may write it (the same answers as ``service._writable``)."""
    row = conn.execute(select(LAYERS).where(LAYERS.c.key == key)).first()
    if row is None or not (scope.sees(row.unit_path) or row.public_read):
        raise NotFound(f"layer {key!r} not found")
    scope.require_covers(row.unit_path, f"layer {key}")
    return row


def merge_schema(old: list[dict], new: list[dict]) -> list[dict]:
    names = {f["name"] for f in old}
    return old + [f for f in new if f["name"] not in names]


def import_file(session, actor, scope, key: str, path: Path, *, fmt: str | None = None, crs: str | None = None,
                mode: str = "replace", source_layer: str | None = None, dry_run: bool = False,
                progress: Callable[[int, int | None], None] | None = None,
                opened: layerfiles.OpenedFile | None = None, announce: Callable | None = None) -> dict:
    """Import a file as the layer's next version (``service.import_file`` says how), in the transaction of
    ``session``: an ORM session, or a Core connection (then nothing of the ORM is used). ``announce(session, event)``
    publishes ``layer.version_created`` in that transaction (default: ``bus.publish`` for a session; for a
    connection the outbox row alone, ``bus.outbox.write``, as a command with no bus of its own writes it)."""
    if mode not in ("replace", "append"):
        raise InvalidInput(f"unknown import mode {mode!r}; use replace or append")
    conn = session if isinstance(session, Connection) else session.connection()
    layer = writable_layer(conn, key, scope)
    current, history = featurestore.tables(layer.key, layer.geometry_type)
    version = layer.current_version + 1
    removed = 0
    if mode == "replace" and not dry_run:
        removed = retire(conn, current, history, current.c.id.is_not(None), version)
    issues: list[layerfiles.Issue] = []
    counts = {"read": 0, "added": 0, "repaired": 0, "errors": 0}
    geometry_type, sqlite = layer.geometry_type, storage_of(conn).rtree_index

    # Without the OGC Feature texts: the server that serves them writes them behind (``featurestore.TextFiller``).
    bulk = featurestore.BulkWriter(conn, current, texts=False)
    # SQLite: the id of the next row inserted, so the reading thread builds the rows' texts with their ids. Only
    # batches without errors are inserted, each after the one before, so the reading thread counts their rows.
    ahead = {"next_id": None if dry_run else bulk.next_id(), "failed": False}

    def prepare(batch: layerfiles.Batch) -> None:
        """On the reading thread: the batch fitted to the layer's type and its rows encoded for the store (blobs or
        COPY buffers, and on SQLite the insert's parameters and the Feature texts), while the writing thread inserts
        the batch before."""
        batch.geometries = layerfiles.conform(batch.geometries, geometry_type, batch.start_row, batch.fids, batch.issues)
        ahead["failed"] = ahead["failed"] or any(i.severity == "error" for i in batch.issues)
        if not dry_run and not counts["errors"] and not ahead["failed"]:
            batch.prepared = featurestore.prepare_rows(sqlite, batch.fids, batch.properties_json, batch.geometries,
                                                       version, (batch.parsed, batch.wkb), texts=False,
                                                       first_id=ahead["next_id"])
            if ahead["next_id"] is not None:
                ahead["next_id"] += len(batch.fids)
    if opened is not None and opened.matches(Path(path), fmt, crs, source_layer):
        reading = opened.use(prepare)
    else:
        reading = layerfiles.open_layer_file(Path(path), fmt, crs=crs, layer=source_layer, prepare=prepare)
    with bulk, reading as (info, batches):
        for batch in batches:
            geoms = batch.geometries
            counts["read"] += len(geoms)
            for issue in batch.issues:
                counts["errors" if issue.severity == "error" else "repaired"] += 1
                if len(issues) < MAX_REPORTED_ISSUES:
                    issues.append(issue)
            if not counts["errors"] and not dry_run:
                counts["added"] += bulk.insert(batch.fids, batch.properties_json, geoms, version,
                                               source=(batch.parsed, batch.wkb), prepared=batch.prepared)
            if progress:
                progress(counts["read"], info.count)
    report = {"layer": key, "version": None if dry_run else version, "mode": mode, "source_crs": info.crs,
              "read": counts["read"], "added": counts["added"], "removed": removed, "repaired": counts["repaired"],
              "errors": counts["errors"], "issues": [i.to_dict() for i in issues],
              "issues_truncated": counts["errors"] + counts["repaired"] > len(issues)}
    if counts["read"] == 0:
        raise InvalidInput(f"{Path(path).name} holds no features")
    if counts["errors"]:
        raise ValidationFailed(f"import rejected: {counts['errors']} feature(s) with errors; nothing was imported",
                               details=report)
    if dry_run:
        return report
    feature_count = conn.execute(select(func.count()).select_from(current)).scalar()
    schema = info.fields if mode == "replace" else merge_schema(layer.attribute_schema, info.fields)
    conn.execute(update(LAYERS).where(LAYERS.c.id == layer.id).values(
        feature_count=feature_count, bounds=storage_of(conn).extent(conn, current.name), attribute_schema=schema,
        source_crs=info.crs, current_version=version, updated_at=utcnow()))
    conn.execute(insert(LAYER_VERSIONS).values(
        layer_id=layer.id, version=version, at=utcnow(), actor=actor.name, action=f"import_{mode}",
        source_name=Path(path).name, added=counts["added"], removed=removed, repaired=counts["repaired"],
        feature_count=feature_count))
    # ``before`` bound as None, as the ORM bound it: JSON null on PostgreSQL, NULL on SQLite.
    conn.execute(insert(AUDIT_LOG).values(
        at=utcnow(), actor_id=actor.user_id, actor=actor.name, action="layer.import", entity="layer",
        entity_key=str(key), unit_path=layer.unit_path, before=None, request_id=actor.request_id,
        after={k: report[k] for k in ("version", "mode", "read", "added", "removed", "repaired")}))
    from cityops.base.manifest import LayerVersionCreated

    event = LayerVersionCreated(key=layer.key, layer_version=version, action=f"import_{mode}")
    if announce is None and conn is session:
        from cityops.core.bus import outbox

        outbox.write(conn, event)
    elif announce is None:
        from cityops.core.bus import publish

        publish(session, event)
    else:
        announce(session, event)
    return report


def retire(conn, current, history, where, version: int) -> int:
    """Move current rows matching ``where`` to history, current until ``version``."""
    # Counted, not taken from rowcount: drivers report -1 for INSERT … SELECT.
    moved = conn.execute(select(func.count()).select_from(current).where(where)).scalar()
    columns = [current.c.id, current.c.fid, current.c.properties, current.c.geom, current.c.v_from, literal(version)]
    conn.execute(insert(history).from_select(
        ["feature_id", "fid", "properties", "geom", "v_from", "v_to"], select(*columns).where(where)))
    conn.execute(current.delete().where(where))
    return moved
