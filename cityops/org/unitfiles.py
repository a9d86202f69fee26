"""Reading and writing administrative-unit files (GeoJSON, GeoPackage, zipped Shapefile, CSV with WKT).

Reading turns a file into :class:`UnitRecord` objects in the canonical CRS (EPSG:4490, x = longitude);
nothing is validated here beyond what is needed to read the file: geometry problems met on the way (an
unclosed ring, unparsable WKT) are recorded in ``UnitRecord.problems`` so that
:func:`cityops.org.validation.validate_units` can report them per feature instead of failing the read.

GDAL behaviours this module relies on or works around (GDAL 3.12 as bundled with pyogrio 0.13):

* GeoJSON with an unclosed polygon ring: GDAL *accepts* it (``OGR_GEOMETRY_ACCEPT_UNCLOSED_RING``
  defaults to YES, a RuntimeWarning "Non closed ring detected" is emitted) and returns the ring still
  open in the WKB, which Shapely then refuses to parse. The raw JSON is therefore scanned for unclosed
  rings, and WKB that Shapely rejects is re-read with ``on_invalid="fix"`` (which closes the ring).
* GeoJSON without a ``crs`` member is reported as EPSG:4326 (CRS84 semantics, x = longitude).
* GDAL's own GeoJSON writer emits a ``crs`` member unless ``RFC7946=YES``; with it, exterior rings are
  rewound counter-clockwise and coordinates go through EPSG:4326 (a no-op for CRS84/4326/4490 here).
* Shapefile field names are cut by GDAL at 10 *bytes*, which can split a UTF-8 Chinese character and
  makes the file unreadable (UnicodeDecodeError when reading the field names back). Names are therefore
  shortened here on character boundaries before writing.
* A zipped shapefile whose ``.shp`` sits in a sub-folder of the archive is not found by ``/vsizip/`` on
  the bare archive path, so the archive is listed and the member path given explicitly.
* Integer fields containing nulls come back from ``pyogrio.raw.read`` as float64 with NaN.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from cityops.core import csvexport
from cityops.core.crs import from_canonical, parse_crs, to_canonical
from cityops.core.errors import InvalidInput, UnknownCRS

__all__ = [
    "SUPPORTED_FORMATS",
    "UnitRecord",
    "detect_format",
    "read_units_file",
    "write_units_file",
]


@dataclass
class UnitRecord:
    code: str
    name: str
    level: str | None  # may be inferred later from the code length
    parent_code: str | None
    geometry: BaseGeometry | None  # canonical CRS, MultiPolygon when polygonal
    name_en: str | None = None
    attributes: dict = field(default_factory=dict)  # every other field of the file, JSON-serialisable
    row: int = 0  # 1-based feature number in the file
    problems: list[str] = field(default_factory=list)  # geometry problems found while reading


SUPPORTED_FORMATS = {"geojson", "gpkg", "shp", "csv"}

_EXTENSIONS = {
    ".geojson": "geojson",
    ".json": "geojson",
    ".gpkg": "gpkg",
    ".shp": "shp",
    ".zip": "shp",
    ".csv": "csv",
}

#: Core column → accepted field names (matched case-insensitively, first match wins).
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "code": ("code", "unit_code", "代码", "编码"),
    "name": ("name", "名称"),
    "name_en": ("name_en",),
    "level": ("level", "层级"),
    "parent_code": ("parent_code", "parent", "上级代码"),
}
CORE_COLUMNS = ("code", "name", "name_en", "level", "parent_code")
#: CSV geometry column names (case-insensitive).
WKT_COLUMNS = ("wkt", "geometry", "geom")
#: Shapefile: ``parent_code`` is 11 characters, one too many for a DBF field name.
_SHP_CORE_NAMES = {"parent_code": "parent"}

_POLYGONAL = ("Polygon", "MultiPolygon")
_NUMERIC_CODE = re.compile(r"^[0-9]+\.0*$")


# --------------------------------------------------------------------------------------------- read


def detect_format(filename: str) -> str:
    """The file format implied by a file name's extension."""
    suffix = Path(str(filename)).suffix.lower()
    try:
        return _EXTENSIONS[suffix]
    except KeyError:
        shown = suffix or "(none)"
        raise InvalidInput(
            f"unsupported file extension {shown!r} for {Path(str(filename)).name!r}; supported: "
            + ", ".join(sorted(_EXTENSIONS))
            + " (.zip = zipped shapefile)"
        ) from None


def read_units_file(
    path: Path,
    *,
    fmt: str | None = None,
    crs: str | None = None,
    layer: str | None = None,
) -> list[UnitRecord]:
    """Read a unit file into records in the canonical CRS.

    ``crs`` overrides the file's own CRS (GeoJSON: CRS84 unless it declares one; GPKG/SHP: the layer's;
    CSV: EPSG:4490). Raises :class:`InvalidInput` for unreadable files and :class:`UnknownCRS` for a CRS
    that cannot be resolved.
    """
    path = Path(path)
    fmt = _normalise_format(fmt) if fmt else detect_format(path.name)
    if not path.exists():
        raise InvalidInput(f"{path.name}: file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise InvalidInput(f"{path.name}: the file is empty")
    crs_ref = parse_crs(crs) if crs is not None else None  # UnknownCRS before any work
    if fmt == "csv":
        return _read_csv(path, crs_ref if crs_ref is not None else parse_crs("EPSG:4490"))
    return _read_ogr(path, fmt, crs, crs_ref, layer)


def _normalise_format(fmt: str) -> str:
    value = fmt.lower().lstrip(".")
    value = {"json": "geojson", "zip": "shp", "shapefile": "shp", "geopackage": "gpkg"}.get(value, value)
    if value not in SUPPORTED_FORMATS:
        raise InvalidInput(f"unsupported format {fmt!r}; supported: {', '.join(sorted(SUPPORTED_FORMATS))}")
    return value


def _ogr_source(path: Path, fmt: str, layer: str | None) -> tuple[str, str | None]:
    """The GDAL path to open and the layer to read."""
    if fmt == "shp" and path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                members = [n for n in archive.namelist() if n.lower().endswith(".shp") and not n.startswith("__MACOSX")]
        except zipfile.BadZipFile:
            raise InvalidInput(f"{path.name}: not a valid zip archive") from None
        if not members:
            raise InvalidInput(f"{path.name}: the zip archive contains no .shp file")
        if layer is not None:
            chosen = [m for m in members if Path(m).stem == layer]
            if not chosen:
                raise InvalidInput(
                    f"{path.name}: no shapefile named {layer!r} in the archive; found: "
                    + ", ".join(Path(m).stem for m in members)
                )
        elif len(members) > 1:
            raise InvalidInput(
                f"{path.name}: the archive holds several shapefiles ("
                + ", ".join(Path(m).stem for m in members)
                + "); pass layer=…"
            )
        else:
            chosen = members
        return f"/vsizip/{path.resolve()}/{chosen[0]}", None
    if fmt == "gpkg":
        import pyogrio

        try:
            layers = pyogrio.list_layers(str(path))
        except Exception as exc:  # noqa: BLE001 - GDAL/SQLite errors of every kind
            raise InvalidInput(f"{path.name}: cannot open as GeoPackage: {_gdal_message(exc)}") from None
        spatial = [str(name) for name, gtype in layers if gtype]
        if layer is not None:
            if layer not in [str(name) for name, _ in layers]:
                raise InvalidInput(
                    f"{path.name}: no layer {layer!r}; layers: " + ", ".join(str(n) for n, _ in layers)
                )
            return str(path), layer
        if len(spatial) == 1:
            return str(path), spatial[0]
        if not spatial:
            raise InvalidInput(f"{path.name}: the GeoPackage has no layer with geometry")
        raise InvalidInput(f"{path.name}: the GeoPackage has several layers ({', '.join(spatial)}); pass layer=…")
    return str(path), layer


def _gdal_message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.split("; It might help")[0]


def _read_ogr(path: Path, fmt: str, crs: str | None, crs_ref, layer: str | None) -> list[UnitRecord]:
    import pyogrio.raw

    raw_json = None
    if fmt == "geojson":
        raw_json = _load_geojson(path)
    source, layer_name = _ogr_source(path, fmt, layer)
    try:
        with warnings.catch_warnings():
            # "Non closed ring detected" and similar: reported per feature below instead.
            warnings.simplefilter("ignore", RuntimeWarning)
            meta, _fids, wkbs, field_data = pyogrio.raw.read(source, layer=layer_name, datetime_as_string=True)
    except Exception as exc:  # noqa: BLE001 - DataSourceError, DataLayerError, UnicodeDecodeError …
        raise InvalidInput(f"{path.name}: cannot read as {fmt}: {_gdal_message(exc)}") from None

    count = len(wkbs) if wkbs is not None else (len(field_data[0]) if field_data else 0)
    if count == 0:
        raise InvalidInput(f"{path.name}: the file contains no features")
    if wkbs is None:
        raise InvalidInput(f"{path.name}: the layer has no geometry column")

    if crs_ref is None:
        file_crs = meta.get("crs")
        if fmt == "geojson" and raw_json is not None and "crs" not in raw_json:
            file_crs = "OGC:CRS84"
        if not file_crs:
            raise InvalidInput(f"{path.name} has no CRS; pass crs=… (for example crs='EPSG:4490')")
        crs_ref = _file_crs(file_crs, path.name)

    layer_type = str(meta.get("geometry_type") or "Unknown").replace(" Z", "").replace(" M", "").strip()
    strict_polygonal = layer_type in _POLYGONAL
    if layer_type not in _POLYGONAL + ("Unknown", "GeometryCollection", "None"):
        raise InvalidInput(
            f"{path.name}: the layer has geometry type {meta.get('geometry_type')}; unit files need polygons"
        )

    names = [str(n) for n in meta["fields"]]
    mapping = _map_columns(names, path.name)
    ogr_types = list(meta.get("ogr_types") or [None] * len(names))
    subtypes = list(meta.get("ogr_subtypes") or [None] * len(names))

    ring_problems = _geojson_unclosed_rings(raw_json, count) if raw_json is not None else {}

    records: list[UnitRecord] = []
    for i in range(count):
        row = i + 1
        values = {
            name: _field_value(field_data[j][i], ogr_types[j], subtypes[j]) for j, name in enumerate(names)
        }
        problems = list(ring_problems.get(i, []))
        geom = _geometry_from_wkb(wkbs[i], problems)
        if geom is not None and strict_polygonal and geom.geom_type not in _POLYGONAL and not geom.is_empty:
            raise InvalidInput(
                f"{path.name}: feature {row} has a {geom.geom_type} geometry in a {layer_type} layer"
            )
        records.append(_make_record(values, mapping, geom, crs_ref, row, problems, path.name))
    return records


def _file_crs(file_crs: str, filename: str):
    """The CRSRef of a layer CRS as GDAL reports it ("EPSG:n", or WKT when GDAL cannot identify it)."""
    try:
        return parse_crs(file_crs)
    except UnknownCRS as exc:
        first_error = exc.message
    try:  # an ESRI .prj or other WKT: let PROJ find the EPSG code
        import pyproj

        authority = pyproj.CRS.from_user_input(file_crs).to_authority(min_confidence=70)
    except Exception:  # noqa: BLE001
        authority = None
    if authority is not None:
        try:
            return parse_crs(f"{authority[0]}:{authority[1]}")
        except UnknownCRS as exc:
            first_error = exc.message
    shown = file_crs if len(file_crs) < 120 else file_crs[:117] + "..."
    raise UnknownCRS(f"{filename}: the file's CRS is not supported ({shown}): {first_error}; pass crs=…")


def _load_geojson(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise InvalidInput(f"{path.name}: the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path.name}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict) or data.get("type") not in ("FeatureCollection", "Feature"):
        found = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise InvalidInput(f"{path.name}: expected a GeoJSON FeatureCollection or Feature, found {found!r}")
    if data["type"] == "FeatureCollection" and not isinstance(data.get("features"), list):
        raise InvalidInput(f"{path.name}: the FeatureCollection has no 'features' list")
    if data["type"] == "FeatureCollection" and not data["features"]:
        raise InvalidInput(f"{path.name}: the file contains no features")
    return data


def _geojson_unclosed_rings(data: dict, count: int) -> dict[int, list[str]]:
    """Feature index → ["unclosed ring …"] from the raw GeoJSON coordinates."""
    features = data["features"] if data.get("type") == "FeatureCollection" else [data]
    if len(features) != count:  # GDAL skipped or split something: the indices would not line up
        return {}
    found: dict[int, list[str]] = {}

    def rings_of(geometry) -> Iterable[tuple[str, list]]:
        if not isinstance(geometry, dict):
            return
        gtype = geometry.get("type")
        coords = geometry.get("coordinates")
        if gtype == "Polygon" and isinstance(coords, list):
            for k, ring in enumerate(coords):
                yield ("exterior ring" if k == 0 else f"interior ring {k}"), ring
        elif gtype == "MultiPolygon" and isinstance(coords, list):
            for p, polygon in enumerate(coords):
                if isinstance(polygon, list):
                    for k, ring in enumerate(polygon):
                        yield (f"polygon {p + 1} " + ("exterior ring" if k == 0 else f"interior ring {k}")), ring
        elif gtype == "GeometryCollection":
            for member in geometry.get("geometries") or []:
                yield from rings_of(member)

    for index, feature in enumerate(features):
        if not isinstance(feature, dict):
            continue
        for label, ring in rings_of(feature.get("geometry")):
            if isinstance(ring, list) and len(ring) >= 2 and ring[0] != ring[-1]:
                first = ring[0]
                found.setdefault(index, []).append(f"unclosed ring ({label} starts at {first} and ends at {ring[-1]})")
    return found


def _geometry_from_wkb(wkb, problems: list[str]) -> BaseGeometry | None:
    if wkb is None:
        return None
    try:
        geom = shapely.from_wkb(wkb)
    except shapely.errors.GEOSException as exc:
        message = str(exc)
        if "closed" in message.lower():
            if not any(p.startswith("unclosed ring") for p in problems):
                problems.append("unclosed ring")
        else:
            problems.append(f"unreadable geometry: {message}")
        try:
            geom = shapely.from_wkb(wkb, on_invalid="fix")
        except Exception:  # noqa: BLE001
            return None
    return geom


def _finish_geometry(geom: BaseGeometry | None, crs_ref, row: int, filename: str) -> BaseGeometry | None:
    if geom is None:
        return None
    if shapely.get_coordinate_dimension(geom) > 2:
        geom = shapely.force_2d(geom)
    if geom.is_empty:
        return geom
    if geom.geom_type == "Polygon":
        geom = shapely.MultiPolygon([geom])
    try:
        return to_canonical(geom, crs_ref)
    except Exception as exc:  # noqa: BLE001 - PROJ errors for coordinates outside the CRS domain
        message = getattr(exc, "message", None) or str(exc)
        raise InvalidInput(
            f"{filename}: feature {row}: cannot transform the geometry from {crs_ref} to EPSG:4490: {message} "
            "(is the CRS right? pass crs=… to override it)"
        ) from None


def _map_columns(names: list[str], filename: str) -> dict[str, str]:
    """Core column → the file's field name."""
    lower = {name.strip().lower(): name for name in reversed(names)}  # first occurrence wins
    mapping: dict[str, str] = {}
    for core, aliases in FIELD_ALIASES.items():
        for alias in aliases:
            if alias.lower() in lower:
                mapping[core] = lower[alias.lower()]
                break
    missing = [c for c in ("code", "name") if c not in mapping]
    if missing:
        raise InvalidInput(
            f"{filename}: missing column {' and '.join(repr(m) for m in missing)} "
            f"(accepted names: {'; '.join(', '.join(FIELD_ALIASES[m]) for m in missing)}); "
            f"columns found: {', '.join(names) if names else '(none)'}"
        )
    return mapping


def _code_text(value) -> str | None:
    """A code as text: numbers lose their '.0', blanks become None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    if not text:
        return None
    if _NUMERIC_CODE.match(text):
        text = text.split(".")[0]
    return text


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    return text or None


def _decode_json_text(value: str):
    stripped = value.strip()
    if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
        try:
            return json.loads(stripped)
        except ValueError:
            return value
    return value


def _field_value(value, ogr_type: str | None, subtype: str | None):
    """A numpy/GDAL field value as a JSON-serialisable Python value."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if subtype == "OFSTBoolean":
        return bool(value)
    if ogr_type in ("OFTInteger", "OFTInteger64") and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, str):
        if subtype == "OFSTJSON":
            try:
                return json.loads(value)
            except ValueError:
                return value
        return _decode_json_text(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_field_value(v, None, None) for v in value]
    return value


def _make_record(values: dict, mapping: dict[str, str], geom, crs_ref, row: int, problems: list[str], filename: str) -> UnitRecord:
    used = set(mapping.values())
    code = _code_text(values.get(mapping["code"]))
    parent = _code_text(values.get(mapping["parent_code"])) if "parent_code" in mapping else None
    level = _text(values.get(mapping["level"])) if "level" in mapping else None
    name_en = _text(values.get(mapping["name_en"])) if "name_en" in mapping else None
    name = _text(values.get(mapping["name"]))
    attributes = {k: v for k, v in values.items() if k not in used}
    return UnitRecord(
        code=code or "",
        name=name or "",
        level=level,
        parent_code=parent,
        geometry=_finish_geometry(geom, crs_ref, row, filename),
        name_en=name_en,
        attributes=attributes,
        row=row,
        problems=problems,
    )


def _read_csv(path: Path, crs_ref) -> list[UnitRecord]:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover - gb18030 decodes almost anything
        raise InvalidInput(f"{path.name}: cannot decode the CSV as UTF-8 or GB18030")
    if not text.strip():
        raise InvalidInput(f"{path.name}: the file is empty")
    _raise_csv_field_limit()
    # The delimiter is the most frequent of , ; tab | in the header line (default ","); quoting is
    # always Excel's (csv.Sniffer guesses doublequote wrongly on a header without quotes).
    first_line = text.split("\n", 1)[0]
    delimiter = max([",", ";", "\t", "|"], key=lambda d: (first_line.count(d), d == ","))
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), csv.excel, delimiter=delimiter))
    except csv.Error as exc:
        raise InvalidInput(f"{path.name}: malformed CSV: {exc}") from None
    header = [h.strip() for h in rows[0]] if rows else []
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    lower = {h.lower(): i for i, h in reversed(list(enumerate(header)))}
    wkt_index = next((lower[c] for c in WKT_COLUMNS if c in lower), None)
    if wkt_index is None:
        raise InvalidInput(
            f"{path.name}: no geometry column (expected one of {', '.join(WKT_COLUMNS)}); "
            f"columns found: {', '.join(header) if header else '(none)'}"
        )
    names = [h for i, h in enumerate(header) if i != wkt_index]
    mapping = _map_columns(names, path.name)
    if not body:
        raise InvalidInput(f"{path.name}: the file contains no features")
    records: list[UnitRecord] = []
    for number, cells in enumerate(body, start=1):
        if len(cells) > len(header):
            raise InvalidInput(f"{path.name}: row {number} has {len(cells)} cells but the header has {len(header)}")
        cells = cells + [""] * (len(header) - len(cells))
        values: dict[str, Any] = {}
        for i, name in enumerate(header):
            if i == wkt_index:
                continue
            cell = cells[i].strip()
            values[name] = _decode_json_text(cell) if cell else None
        problems: list[str] = []
        geom = _geometry_from_wkt(cells[wkt_index], problems)
        records.append(_make_record(values, mapping, geom, crs_ref, number, problems, path.name))
    return records


def _raise_csv_field_limit() -> None:
    limit = 1 << 28  # district outlines in WKT easily exceed the default 128 KiB
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)


def _geometry_from_wkt(text: str, problems: list[str]) -> BaseGeometry | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return shapely.from_wkt(text)
    except shapely.errors.GEOSException as exc:
        message = str(exc)
        if "closed" in message.lower():
            problems.append("unclosed ring")
            try:
                return shapely.from_wkt(text, on_invalid="fix")
            except Exception:  # noqa: BLE001
                return None
        problems.append(f"unreadable WKT: {message.split(': ', 1)[-1]}")
        return None


# -------------------------------------------------------------------------------------------- write


_GEOJSON_CRS = {"OGC:CRS84", "EPSG:4326", "EPSG:4490"}


def write_units_file(records: Iterable[UnitRecord], path: Path, fmt: str, crs: str = "EPSG:4490") -> Path:
    """Write records (canonical CRS) to ``path`` in ``fmt``; returns the written file.

    Shapefiles are returned as a ``.zip`` (.shp/.shx/.dbf/.prj/.cpg, UTF-8); when ``path`` does not end
    in ``.zip`` its suffix is replaced. GeoJSON is always RFC 7946 (lon/lat, no ``crs`` member), so only
    CRS84, EPSG:4326 and EPSG:4490 are accepted for it.
    """
    fmt = _normalise_format(fmt)
    records = list(records)
    path = Path(path)
    crs_ref = parse_crs(crs)
    if fmt == "geojson" and crs_ref.key not in _GEOJSON_CRS:
        raise InvalidInput(
            f"GeoJSON is written in CRS84 longitude/latitude (RFC 7946); crs={crs!r} is not allowed, "
            "use EPSG:4490, EPSG:4326 or OGC:CRS84"
        )
    if fmt != "csv" and crs_ref.epsg is None:
        raise InvalidInput(
            f"crs={crs!r} ({crs_ref.key}) has no EPSG definition that a {fmt} file could declare; "
            "use csv for it, or an EPSG CRS"
        )
    geometries = [
        None if r.geometry is None else (r.geometry if fmt == "geojson" else from_canonical(r.geometry, crs_ref))
        for r in records
    ]
    columns = _columns(records)
    if fmt == "csv":
        return _write_csv(records, geometries, columns, path)
    return _write_ogr(records, geometries, columns, path, fmt, crs_ref, crs)


def _columns(records: list[UnitRecord]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        for key in record.attributes:
            seen.setdefault(str(key), None)
    clash = [k for k in seen if k.lower() in CORE_COLUMNS or k.lower() in WKT_COLUMNS]
    if clash:
        raise InvalidInput(f"attribute names clash with core columns: {', '.join(clash)}")
    return list(seen)


def _json_text(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _column_array(values: list) -> tuple[np.ndarray, np.ndarray | None]:
    """A typed numpy column and its null mask (None when there are no nulls)."""
    present = [v for v in values if v is not None]
    mask = np.array([v is None for v in values], dtype=bool)
    any_null = bool(mask.any())
    if present and all(isinstance(v, bool) for v in present):
        return np.array([bool(v) if v is not None else False for v in values], dtype=bool), (mask if any_null else None)
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        if all(-(2**63) <= v < 2**63 for v in present):
            return np.array([v if v is not None else 0 for v in values], dtype=np.int64), (mask if any_null else None)
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return np.array([float(v) if v is not None else np.nan for v in values], dtype=np.float64), (mask if any_null else None)
    out = np.array(
        [None if v is None else (v if isinstance(v, str) else _json_text(v)) for v in values], dtype=object
    )
    return out, None


def _shp_field_name(name: str, taken: set[str]) -> str:
    """A DBF field name of at most 10 UTF-8 bytes, cut on a character boundary, unique."""

    def cut(text: str, limit: int) -> str:
        out = ""
        for ch in text:
            if len((out + ch).encode("utf-8")) > limit:
                break
            out += ch
        return out

    candidate = cut(name, 10)
    n = 1
    while candidate.lower() in taken:
        suffix = f"_{n}"
        candidate = cut(name, 10 - len(suffix)) + suffix
        n += 1
    taken.add(candidate.lower())
    return candidate


def _write_ogr(records, geometries, columns, path: Path, fmt: str, crs_ref, crs: str) -> Path:
    import pyogrio.raw

    wkbs = np.array([None if g is None else shapely.to_wkb(g, flavor="iso") for g in geometries], dtype=object)
    polygonal = all(g is None or g.is_empty or g.geom_type in _POLYGONAL for g in geometries)
    names = list(CORE_COLUMNS)
    data: list[np.ndarray] = []
    masks: list[np.ndarray | None] = []
    for core in CORE_COLUMNS:
        data.append(np.array([_none_if_blank(getattr(r, core)) for r in records], dtype=object))
        masks.append(None)
    for key in columns:
        array, mask = _column_array([r.attributes.get(key) for r in records])
        names.append(key)
        data.append(array)
        masks.append(mask)

    if fmt == "shp":
        taken: set[str] = set()
        names = [_shp_field_name(_SHP_CORE_NAMES.get(n, n), taken) for n in names]

    # "EPSG:n"; CRS84 is declared as EPSG:4326 (GDAL writes x = longitude either way, and readers
    # know the EPSG code better than the OGC one).
    crs_wkt = "EPSG:4326" if crs_ref.key == "OGC:CRS84" else crs_ref.key
    kwargs: dict[str, Any] = dict(
        field_mask=masks,
        geometry_type="MultiPolygon" if polygonal else "Unknown",
        promote_to_multi=polygonal,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "geojson":
            target = path
            _unlink(target)
            pyogrio.raw.write(
                str(target), wkbs, data, names, driver="GeoJSON", crs="OGC:CRS84", layer=path.stem,
                layer_options={"RFC7946": "YES", "COORDINATE_PRECISION": "15", "WRITE_NAME": "NO"}, **kwargs,
            )
            return target
        if fmt == "gpkg":
            target = path
            _unlink(target)
            pyogrio.raw.write(str(target), wkbs, data, names, driver="GPKG", crs=crs_wkt, layer=path.stem, **kwargs)
            return target
        # Shapefile → zip
        target = path if path.suffix.lower() == ".zip" else path.with_suffix(".zip")
        stem = target.stem
        with tempfile.TemporaryDirectory(prefix="cityops-shp-") as tmp:
            shp = Path(tmp) / f"{stem}.shp"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # "Normalized/laundered field name"
                pyogrio.raw.write(
                    str(shp), wkbs, data, names, driver="ESRI Shapefile", crs=crs_wkt, encoding="UTF-8",
                    layer=stem, **kwargs,
                )
            _unlink(target)
            with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
                    member = shp.with_suffix(ext)
                    if member.exists():
                        archive.write(member, member.name)
        return target
    except InvalidInput:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InvalidInput(f"cannot write {path.name} as {fmt}: {_gdal_message(exc)}") from None


def _unlink(path: Path) -> None:
    if path.exists():
        path.unlink()


def _none_if_blank(value):
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


def _write_csv(records, geometries, columns, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = list(CORE_COLUMNS) + columns + ["wkt"]
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csvexport.Writer(handle)
        writer.writerow(header)
        for record, geom in zip(records, geometries):
            row = [_none_if_blank(getattr(record, c)) or "" for c in CORE_COLUMNS]
            for key in columns:
                value = record.attributes.get(key)
                if value is None:
                    row.append("")
                elif isinstance(value, str):
                    row.append(value)
                elif isinstance(value, bool):
                    row.append("true" if value else "false")
                elif isinstance(value, (int, float)):
                    row.append(value)  # a number, not text: written as it is (repr for floats)
                else:
                    row.append(_json_text(value))
            row.append("" if geom is None else shapely.to_wkt(geom, rounding_precision=-1))
            writer.writerow(row)
    return path
