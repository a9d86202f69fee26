"""Streamed reading and writing of layer files through pyogrio (GDAL): GeoJSON, GeoJSON-seq, GeoPackage,
Shapefile (plain or zipped), FlatGeobuf and CSV (lon/lat columns or WKT).

Reading yields batches, so memory stays bounded whatever the file size. Geometry leaves here in the
canonical CRS, checked and, where the repair is unambiguous, repaired.
"""

from __future__ import annotations

import json
import queue
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError, FieldError, GeometryError

from cityops.core import csvexport
from cityops.core.crs import parse_crs, to_canonical_many, from_canonical_many
from cityops.core.errors import InvalidInput, UnknownCRS

#: format key → (GDAL driver, file suffix)
FORMATS = {
    "geojson": ("GeoJSON", ".geojson"),
    "geojsonseq": ("GeoJSONSeq", ".geojsonl"),
    "gpkg": ("GPKG", ".gpkg"),
    "shp": ("ESRI Shapefile", ".zip"),
    "fgb": ("FlatGeobuf", ".fgb"),
    "csv": ("CSV", ".csv"),
}
_SUFFIXES = {".geojson": "geojson", ".json": "geojson", ".geojsonl": "geojsonseq", ".geojsons": "geojsonseq",
             ".geojsonseq": "geojsonseq", ".ndjson": "geojsonseq", ".gpkg": "gpkg", ".shp": "shp", ".zip": "shp",
             ".fgb": "fgb", ".csv": "csv"}
_CSV_OPTIONS = {
    "X_POSSIBLE_NAMES": "lon,lng,longitude,x,经度",
    "Y_POSSIBLE_NAMES": "lat,latitude,y,纬度",
    "GEOM_POSSIBLE_NAMES": "wkt,geometry,geom",
    "KEEP_GEOM_COLUMNS": "NO",
    "AUTODETECT_TYPE": "YES",
}
BATCH_SIZE = 20_000
_FAMILY = {"Point": "point", "MultiPoint": "point", "LineString": "line", "MultiLineString": "line",
           "LinearRing": "line", "Polygon": "polygon", "MultiPolygon": "polygon"}


def detect_format(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix not in _SUFFIXES:
        raise InvalidInput(f"unsupported file type {suffix or filename!r}; use one of "
                           f"{', '.join(sorted(set(_SUFFIXES)))}")
    return _SUFFIXES[suffix]


def _gdal_path(path: Path, fmt: str) -> str:
    if fmt == "shp" and path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                members = [n for n in archive.namelist() if n.lower().endswith(".shp")]
        except zipfile.BadZipFile:
            raise InvalidInput(f"{path.name} is not a valid zip archive") from None
        if len(members) != 1:
            raise InvalidInput(f"{path.name} must hold exactly one .shp file, found {len(members)}")
        return f"/vsizip/{path}/{members[0]}"
    return str(path)


@dataclass
class Issue:
    row: int
    fid: str | None
    check: str
    message: str
    severity: str = "error"

    def to_dict(self) -> dict:
        return {"row": int(self.row), "fid": self.fid, "check": self.check, "message": self.message, "severity": self.severity}


@dataclass
class SourceInfo:
    crs: str
    fields: list[dict]
    geometry_type: str | None
    count: int | None  # None when the driver cannot count without reading
    layer: str | None


@dataclass
class Batch:
    start_row: int
    fids: list[str | None]
    #: One JSON object per feature, encoded column by column from Arrow (no per-row dicts on the hot path).
    properties_json: list[str]
    geometries: np.ndarray  # canonical, valid, or None where rejected
    issues: list[Issue] = field(default_factory=list)
    #: The geometries as parsed from the file and the file's own WKB (Arrow) they were parsed from: where a geometry
    #: is stored unchanged (no CRS transformation, no repair), its bytes can be written as they came.
    parsed: np.ndarray | None = None
    wkb: pa.Array | None = None
    #: What the consumer's ``prepare`` (``open_layer_file``) made of the batch on the reading thread, if anything.
    prepared: object = None

    @property
    def properties(self) -> list[dict]:
        return [json.loads(p) for p in self.properties_json]


_ARROW_TYPES = {
    pa.types.is_integer: "integer", pa.types.is_floating: "number", pa.types.is_boolean: "boolean",
    pa.types.is_timestamp: "datetime", pa.types.is_date: "date", pa.types.is_string: "string",
    pa.types.is_large_string: "string",
}


def _field_type(arrow_type) -> str:
    for test, name in _ARROW_TYPES.items():
        if test(arrow_type):
            return name
    return "json"


def _json_value(value):
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


@contextmanager
def open_layer_file(path: Path, fmt: str | None = None, *, crs: str | None = None, layer: str | None = None,
                    batch_size: int = BATCH_SIZE,
                    prepare: Callable[[Batch], None] | None = None) -> Iterator[tuple[SourceInfo, Iterator[Batch]]]:
    """Open a file for streamed reading: (info, batches). Errors name the file and what is wrong. ``prepare(batch)``
    runs on the reading thread after the batch's own checks, before the consumer sees it: work of the consumer's that
    needs only the batch (fitting the layer's type, the texts of the rows) overlaps the consumer's writes."""
    path = Path(path)
    fmt = fmt or detect_format(path.name)
    if not path.exists() or path.stat().st_size == 0:
        raise InvalidInput(f"{path.name} is empty or missing")
    source = _gdal_path(path, fmt)
    options = dict(_CSV_OPTIONS) if fmt == "csv" else {}
    try:
        info = pyogrio.read_info(source, layer=layer, **options)
        count = info.get("features")
        count = count if isinstance(count, (int, np.integer)) and count >= 0 else None
        arrow_cm = pyogrio.raw.open_arrow(source, layer=layer, batch_size=batch_size, use_pyarrow=True, **options)
        meta, reader = arrow_cm.__enter__()
    except (DataSourceError, DataLayerError, FieldError, GeometryError, OSError, RuntimeError, ValueError) as exc:
        raise InvalidInput(f"cannot read {path.name} as {fmt}: {str(exc).splitlines()[0]}") from None
    try:
        file_crs = meta.get("crs")
        if crs:
            ref = parse_crs(crs)
        elif file_crs:
            try:
                ref = parse_crs(file_crs)
            except UnknownCRS:
                raise InvalidInput(f"{path.name} declares CRS {file_crs!r}, which is not supported; pass crs=…") from None
        elif fmt == "csv":
            ref = parse_crs("EPSG:4490")
        else:
            raise InvalidInput(f"{path.name} has no CRS; pass crs=…")
        geometry_name = meta.get("geometry_name") or "wkb_geometry"
        schema_fields = [f for f in reader.schema if f.name not in (geometry_name, "wkb_geometry", "geometry")]
        fid_column = meta.get("fid_column") or None
        fields = [{"name": f.name, "type": _field_type(f.type)} for f in schema_fields if f.name != fid_column]
        source_info = SourceInfo(str(ref), fields, meta.get("geometry_type"), int(count) if count is not None else None, layer)

        def batches() -> Iterator[Batch]:
            row = 1
            try:
                for record_batch in reader:
                    yield _to_batch(record_batch, row, ref, geometry_name, fid_column, [f["name"] for f in fields])
                    row += record_batch.num_rows
            except (DataSourceError, DataLayerError, GeometryError, OSError, RuntimeError, pa.ArrowException) as exc:
                raise InvalidInput(f"{path.name}: reading stopped near feature {row}: {str(exc).splitlines()[0]}") from None

        def prepared() -> Iterator[Batch]:
            source = batches()
            ready = getattr(prepare, "ready", None)  # a LatePrepare: batches are read before it is told what to do
            held: list[Batch] = []
            try:
                for batch in source:
                    if ready is not None and not ready.is_set() and len(held) < EARLY_BATCHES:
                        held.append(batch)
                        continue
                    if ready is not None:
                        ready.wait()
                    for each in (*held, batch):
                        prepare(each)
                        yield each
                    held = []
                if held:
                    ready.wait()
                    for each in held:
                        prepare(each)
                        yield each
            finally:
                source.close()

        ahead = _ReadAhead(prepared() if prepare is not None else batches())
        try:
            yield source_info, iter(ahead)
        finally:
            if isinstance(prepare, LatePrepare):
                prepare.cancel()  # a reading thread still waiting to be told what to prepare stops
            ahead.close()  # the reading thread is done with GDAL before the file is closed below
    finally:
        arrow_cm.__exit__(None, None, None)


#: Batches a file opened early (``OpenedFile``) reads and checks before its consumer says how to prepare them.
EARLY_BATCHES = 3


class LatePrepare:
    """A ``prepare`` for a file opened before its consumer knows what to prepare: the reading thread reads, parses
    and checks up to ``EARLY_BATCHES`` batches meanwhile, then waits for ``set(fn)`` (or ``cancel()``)."""

    def __init__(self):
        self._fn: Callable[[Batch], None] | None = None
        self.ready = threading.Event()

    def set(self, fn: Callable[[Batch], None]) -> None:
        self._fn = fn
        self.ready.set()

    def cancel(self) -> None:
        self.ready.set()

    def __call__(self, batch: Batch) -> None:
        if self._fn is not None:
            self._fn(batch)


class OpenedFile:
    """A layer file opened, and its reading begun, before the import that consumes it (``service.import_file``'s
    ``opened``): the command line opens the file first and loads the platform (SQLAlchemy, the settings, the store)
    while the reading thread reads, parses and checks the first batches; GDAL, GEOS and Arrow release the GIL, so
    on two cores most of that reading costs no time. An error of opening is kept and raised where the import would
    have opened the file, so what an import reports, and in which order, is unchanged."""

    def __init__(self, path: Path, fmt: str | None = None, *, crs: str | None = None, layer: str | None = None):
        self.key = (Path(path), fmt, crs, layer)
        self.prepare = LatePrepare()
        self._cm = open_layer_file(Path(path), fmt, crs=crs, layer=layer, prepare=self.prepare)
        self.value, self.error, self._open = None, None, False
        try:
            self.value = self._cm.__enter__()
            self._open = True
        except Exception as exc:  # noqa: BLE001 - raised by ``use``, where the import opens its file
            self.error = exc

    def matches(self, path: Path, fmt: str | None, crs: str | None, layer: str | None) -> bool:
        return self.key == (Path(path), fmt, crs, layer)

    @contextmanager
    def use(self, prepare: Callable[[Batch], None]) -> Iterator[tuple[SourceInfo, Iterator[Batch]]]:
        """What ``open_layer_file(…, prepare=prepare)`` gives, from the file opened already."""
        try:
            if self.error is not None:
                raise self.error
            self.prepare.set(prepare)
            yield self.value
        finally:
            self.close()

    def close(self) -> None:
        if self._open:
            self._open = False
            self._cm.__exit__(None, None, None)


class _ReadAhead:
    """Batches read, parsed and checked on a thread of their own, ``depth`` ahead of the consumer.

    GDAL's Arrow reader, the WKB parse, the CRS transformation and the validity checks release the GIL, as
    the database driver does while it writes: the next batch is prepared while the caller inserts this one
    (on one core it costs nothing; on two the import takes about the longer of the two instead of their sum).
    Errors of the reading side are raised in the consumer at the batch where they happened."""

    _END = object()

    def __init__(self, source: Iterator[Batch], depth: int = 2):
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="layer-read-ahead", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for batch in self._source:
                if not self._put(batch):
                    return
            self._put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(exc)
        finally:
            self._source.close()

    def __iter__(self) -> Iterator[Batch]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


_NEEDS_ESCAPE = r'["\\\x00-\x1f]'


def _text(value: str) -> pa.Scalar:
    # Typed: a Python value whose Arrow type must be inferred makes pyarrow probe for pandas and import dateutil.
    return pa.scalar(value, pa.string())


def _json_fragments(name: str, column: pa.Array) -> pa.Array:
    """``"name":value`` JSON text for every row of an Arrow column, computed on the whole column: Arrow's
    kernels do the formatting; Python's json only sees the rare strings that need escaping and types Arrow
    cannot format as JSON (dates, binary, nested). The same text json.dumps would give, up to float spelling."""
    key = json.dumps(name, ensure_ascii=False) + ":"
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        column = column.cast(pa.string())
        quote = _text('"')
        text = pc.binary_join_element_wise(quote, column, quote, _text(""))
        escape = pc.fill_null(pc.match_substring_regex(column, _NEEDS_ESCAPE), pa.scalar(False, pa.bool_()))
        if pc.any(escape).as_py():
            values = text.to_pylist()
            raw = column.to_pylist()
            for i in np.flatnonzero(escape.to_numpy(zero_copy_only=False)):
                values[i] = json.dumps(raw[i], ensure_ascii=False)
            text = pa.array(values, pa.string())
    elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        text = column.cast(pa.string())  # booleans come out as true/false
    elif pa.types.is_floating(kind):
        finite = pc.is_finite(column)  # NaN and ±inf are not JSON: null, as the dict path would not allow them
        text = pc.if_else(finite, column.cast(pa.string()), pa.scalar(None, pa.string()))
    else:
        values = [None if v is None else json.dumps(_json_value(v), ensure_ascii=False) for v in column.to_pylist()]
        text = pa.array(values, pa.string())
    return pc.binary_join_element_wise(_text(key), pc.fill_null(text, _text("null")), _text(""))


def properties_json(record_batch, names: list[str]) -> list[str]:
    """The properties of every row as JSON objects, built column-wise."""
    present = [n for n in names if n in record_batch.schema.names]
    if not present:
        return ["{}"] * record_batch.num_rows
    parts = [_json_fragments(n, record_batch.column(n)) for n in present]
    body = pc.binary_join_element_wise(*parts, _text(",")) if len(parts) > 1 else parts[0]
    return pc.binary_join_element_wise(_text("{"), body, _text("}"), _text("")).to_pylist()


def _to_batch(record_batch, start_row: int, ref, geometry_name: str, fid_column: str | None, names: list[str]) -> Batch:
    n = record_batch.num_rows
    properties = properties_json(record_batch, names)
    fids = ([str(v) if v is not None else None for v in record_batch.column(fid_column).to_pylist()]
            if fid_column and fid_column in record_batch.schema.names else [None] * n)
    issues: list[Issue] = []
    if geometry_name in record_batch.schema.names:
        column = record_batch.column(geometry_name)
        blobs = np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)
        missing = column.is_null().to_numpy(zero_copy_only=False)
        # One vectorised parse; unreadable blobs come back as None and are looked at one by one below.
        geoms = np.asarray(shapely.from_wkb(blobs, on_invalid="ignore"), dtype=object)
        wkb = column if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type) else None
    else:
        missing, geoms, wkb = np.ones(n, dtype=bool), np.full(n, None, dtype=object), None
    parsed = geoms.copy()  # the transformation and the repairs below replace elements of ``geoms``, never these
    for i in np.flatnonzero(missing):
        issues.append(Issue(start_row + i, fids[i], "missing_geometry", f"feature {start_row + i} has no geometry"))
    for i in np.flatnonzero(~missing & np.array([g is None for g in geoms], dtype=bool)):
        try:
            shapely.from_wkb(blobs[i])
            message = "unreadable geometry"
        except shapely.errors.GEOSException as exc:
            message = f"unreadable geometry ({exc})"
        issues.append(Issue(start_row + i, fids[i], "invalid_geometry", f"feature {start_row + i}: {message}"))
    present = np.array([g is not None for g in geoms], dtype=bool)
    if present.any():
        try:
            geoms[present] = to_canonical_many(geoms[present], ref)
        except InvalidInput as exc:
            raise InvalidInput(f"coordinates do not fit CRS {ref}: {exc.message}") from None
    _check_and_repair(geoms, start_row, fids, issues)
    return Batch(start_row, fids, properties, geoms, issues, parsed, wkb)


def _check_and_repair(geoms: np.ndarray, start_row: int, fids: list, issues: list[Issue]) -> None:
    """Repair an invalid geometry when the repair is unambiguous: make_valid keeps its dimension and its
    area/length changes by under 1 % (a spike or a repeated ring point). A bow-tie (signed area ≈ 0) or an
    inverted ring is ambiguous: rejected, naming the feature and the reason."""
    present = np.array([g is not None for g in geoms], dtype=bool)
    if not present.any():
        return
    valid = np.ones(len(geoms), dtype=bool)
    valid[present] = shapely.is_valid(geoms[present])
    empty = np.zeros(len(geoms), dtype=bool)
    empty[present] = shapely.is_empty(geoms[present])
    for i in np.flatnonzero(empty):
        issues.append(Issue(start_row + i, fids[i], "empty_geometry", f"feature {start_row + i} has an empty geometry"))
        geoms[i] = None
    for i in np.flatnonzero(present & ~valid & ~empty):
        geom = geoms[i]
        reason = shapely.is_valid_reason(geom)
        fixed = shapely.make_valid(geom)
        family = _FAMILY.get(geom.geom_type)
        parts = [p for p in shapely.get_parts(fixed) if _FAMILY.get(p.geom_type) == family and not p.is_empty]
        measure = shapely.area if family == "polygon" else shapely.length
        before = float(measure(geom)) if family in ("polygon", "line") else 0.0
        candidate = shapely.union_all(parts) if parts else None
        after = float(measure(candidate)) if candidate is not None else 0.0
        # Parts of a lower dimension (the dangle of a spike) carry no area or length and are dropped.
        same_family = candidate is not None and _FAMILY.get(candidate.geom_type) == family
        if same_family and before > 0 and abs(after - before) <= 0.01 * before:
            geoms[i] = candidate
            issues.append(Issue(start_row + i, fids[i], "repaired", f"feature {start_row + i}: repaired ({reason})", "warning"))
        else:
            geoms[i] = None
            issues.append(Issue(start_row + i, fids[i], "invalid_geometry",
                                f"feature {start_row + i}: invalid geometry that cannot be repaired unambiguously ({reason})"))


def conform(geoms: np.ndarray, geometry_type: str, start_row: int, fids: list, issues: list[Issue]) -> np.ndarray:
    """Fit geometries to a layer's declared type: singles become multis in a MULTI layer; anything of
    another dimension (or a multi in a single layer) is an error naming the feature."""
    if geometry_type == "GEOMETRY":
        return geoms
    want_multi = geometry_type.startswith("MULTI")
    base = geometry_type.removeprefix("MULTI")
    family = {"POINT": "point", "LINESTRING": "line", "POLYGON": "polygon"}[base]
    out = geoms.copy()
    # Shapely type ids: 0 Point, 1 LineString, 3 Polygon, 4/5/6 their multis; -1 for None.
    single = {"point": 0, "line": 1, "polygon": 3}[family]
    type_ids = shapely.get_type_id(geoms)
    target = single + 3 if want_multi else single
    if want_multi:  # the common case in one vectorised step: singles of the right family wrapped as multis
        wrap = np.flatnonzero(type_ids == single)
        if len(wrap):
            make = {"point": shapely.multipoints, "line": shapely.multilinestrings, "polygon": shapely.multipolygons}[family]
            out[wrap] = make(geoms[wrap][:, None])
            type_ids = type_ids.copy()
            type_ids[wrap] = target
    for i in np.flatnonzero((type_ids != target) & (type_ids != -1)):
        geom = geoms[i]
        if _FAMILY.get(geom.geom_type) != family:
            issues.append(Issue(start_row + i, fids[i], "wrong_geometry_type",
                                f"feature {start_row + i} is a {geom.geom_type}; the layer holds {geometry_type}"))
            out[i] = None
        elif want_multi and not geom.geom_type.startswith("Multi"):  # LinearRing and the like
            out[i] = {"point": shapely.MultiPoint, "line": shapely.MultiLineString, "polygon": shapely.MultiPolygon}[family]([geom])
        elif not want_multi and geom.geom_type.startswith("Multi"):
            if len(geom.geoms) == 1:
                out[i] = geom.geoms[0]
            else:
                issues.append(Issue(start_row + i, fids[i], "wrong_geometry_type",
                                    f"feature {start_row + i} has {len(geom.geoms)} parts; the layer holds single {base}s"))
                out[i] = None
    return out


def write_layer_file(path: Path, fmt: str, batches: Iterable[tuple[list, list[dict], np.ndarray]], fields: list[dict],
                     geometry_type: str, crs: str = "EPSG:4490", layer_name: str = "layer") -> Path:
    """Stream (fids, properties, canonical geometries) batches into a file. Shapefiles come back zipped."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    ref = parse_crs(crs)
    if ref.epsg is None and fmt != "csv":
        raise InvalidInput(f"{ref} cannot be declared in a {fmt} file; export to CSV or choose an EPSG CRS")
    if fmt in ("geojson", "geojsonseq") and ref.key not in ("EPSG:4326", "EPSG:4490", "OGC:CRS84"):
        raise InvalidInput(f"GeoJSON is lon/lat (RFC 7946); {ref} is not allowed for {fmt}")
    driver, _ = FORMATS[fmt]
    arrow_types = {"integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}
    # "feature_id", not "fid": GeoPackage reserves fid for its integer primary key.
    schema = pa.schema([pa.field("feature_id", pa.string())]
                       + [pa.field(f["name"], arrow_types.get(f["type"], pa.string())) for f in fields]
                       + [pa.field("geometry", pa.binary(), metadata={"ARROW:extension:name": "geoarrow.wkb"})])

    # GDAL writes the CSV; its text cells go through the shared guard against formulas (core.csvexport).
    text_cell = csvexport.safe_cell if fmt == "csv" else (lambda v: v)

    def record_batches():
        for fids, properties, geoms in batches:
            geoms = from_canonical_many(np.asarray(geoms, dtype=object), ref) if len(geoms) else geoms
            columns = [pa.array([text_cell(f) for f in fids], pa.string())]
            for f in fields:
                values = [p.get(f["name"]) for p in properties]
                if f["type"] not in arrow_types:
                    values = [None if v is None else text_cell(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
                              for v in values]
                columns.append(pa.array(values, arrow_types.get(f["type"], pa.string())))
            columns.append(pa.array(shapely.to_wkb(geoms), pa.binary()))
            yield pa.RecordBatch.from_arrays(columns, schema=schema)

    target = Path(path)
    options = {}
    if fmt == "csv":
        options["layer_options"] = {"GEOMETRY": "AS_WKT"}
    if fmt == "geojson":
        options["layer_options"] = {"RFC7946": "YES"}
    write_target = target.with_suffix(".shp") if fmt == "shp" else target
    if fmt == "shp":
        options["layer_options"] = {"ENCODING": "UTF-8"}
    crs_wkt = None if ref.epsg is None else f"EPSG:{ref.epsg}"
    reader = pa.RecordBatchReader.from_batches(schema, record_batches())
    pyogrio.write_arrow(reader, write_target, layer=layer_name, driver=driver, geometry_name="geometry",
                        geometry_type=_ogr_geometry_type(geometry_type), crs=crs_wkt, **options)
    if fmt == "shp":
        zipped = target.with_suffix(".zip")
        with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
            for part in sorted(write_target.parent.glob(write_target.stem + ".*")):
                if part.suffix.lower() != ".zip":
                    archive.write(part, part.name)
                    part.unlink()
        return zipped
    return target


def _ogr_geometry_type(geometry_type: str) -> str:
    return {"POINT": "Point", "MULTIPOINT": "MultiPoint", "LINESTRING": "LineString", "MULTILINESTRING": "MultiLineString",
            "POLYGON": "Polygon", "MULTIPOLYGON": "MultiPolygon"}.get(geometry_type, "Unknown")
