"""``cityops tiles``: list tile sets, export a tile pyramid ({z}/{x}/{y}.mvt) for offline use, and prepare the
buildings' z14 tile geometry for rows written past the platform's writers.

The command line acts with the whole district in scope, as the other store-level commands do. The exported
``tilejson.json`` has a relative ``tiles`` template (``{z}/{x}/{y}.mvt``): make it absolute where the
pyramid is published, as TileJSON 3.0 asks."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(help="Vector tiles (矢量瓦片): list tile sets, export a tile pyramid", no_args_is_help=True)


def _bbox(value: str | None) -> tuple[float, float, float, float] | None:
    if not value:
        return None
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise typer.BadParameter("bbox must be minlon,minlat,maxlon,maxlat") from None
    if len(parts) != 4 or not (parts[0] < parts[2] and parts[1] < parts[3]):
        raise typer.BadParameter("bbox must be minlon,minlat,maxlon,maxlat with min < max")
    return parts


def register(root: typer.Typer, settings_fn, store_fn, run_fn, console, data_dir_option) -> None:
    """Add the ``tiles`` sub-command group to the main CLI (wiring from cityops/cli.py)."""

    @app.command("list")
    def list_tilesets(data_dir: Optional[Path] = data_dir_option) -> None:
        """The tile sets: the base map and one per catalogue layer."""
        settings = settings_fn(data_dir)

        def body():
            from cityops.base import service as layers
            from cityops.identity.scope import Scope

            _, sessions, _ = store_fn(settings)
            table = Table("tile set", "title", "geometry", "features")
            table.add_row("basemap", "一张图基础底图 (units, buildings, key layers)", "mixed", "")
            with sessions() as session:
                for layer in layers.list_layers(session, Scope(all_units=True)):
                    table.add_row(layer.key, layer.title_zh, layer.geometry_type, str(layer.feature_count))
            console.print(table)

        run_fn(body)

    @app.command("export")
    def export(
        target: Path = typer.Argument(..., help="Directory to write {z}/{x}/{y}.mvt and tilejson.json into"),
        tileset: str = typer.Option("basemap", help="basemap or a layer key"),
        min_zoom: int = typer.Option(10, min=0, max=24),
        max_zoom: int = typer.Option(13, min=0, max=24),
        bbox: Optional[str] = typer.Option(None, help="minlon,minlat,maxlon,maxlat (default: the tile set's bounds)"),
        data_dir: Optional[Path] = data_dir_option,
    ) -> None:
        """Render every tile of a zoom range over the district (or a bbox) to files, with a size summary."""
        settings = settings_fn(data_dir)
        box = _bbox(bbox)
        if min_zoom > max_zoom:
            raise typer.BadParameter("--min-zoom must not exceed --max-zoom")

        def body():
            from cityops.core.errors import NotFound
            from cityops.identity.scope import Scope
            from cityops.tiles import service

            scope = Scope(all_units=True)
            _, sessions, _ = store_fn(settings)
            with sessions() as session:
                bounds = box or service.bounds_of(session, scope, tileset)
                if bounds is None:
                    raise NotFound(f"tile set {tileset!r} has no extent to export; give --bbox")
                tiles = [t for z in range(min_zoom, max_zoom + 1) for t in service.tms().tiles(*bounds, [z])]
                sizes: dict[int, list[int]] = {}
                with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                              console=console) as bar:
                    task = bar.add_task(f"tiles {tileset} z{min_zoom}–{max_zoom}", total=len(tiles))
                    for t in tiles:
                        data = service.render(session, scope, tileset, t.z, t.x, t.y)
                        sizes.setdefault(t.z, []).append(len(data))
                        if data:
                            path = target / str(t.z) / str(t.x) / f"{t.y}.mvt"
                            path.parent.mkdir(parents=True, exist_ok=True)
                            path.write_bytes(data)
                        bar.advance(task)
                doc = service.tilejson(session, scope, tileset, "{z}/{x}/{y}.mvt")
                doc["minzoom"], doc["maxzoom"] = min_zoom, max_zoom
            target.mkdir(parents=True, exist_ok=True)
            (target / "tilejson.json").write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
            table = Table("zoom", "tiles", "empty", "median bytes", "largest bytes", title=f"{tileset} → {target}")
            for z, values in sorted(sizes.items()):
                table.add_row(str(z), str(len(values)), str(sum(1 for v in values if not v)),
                              f"{int(statistics.median(values)):,}", f"{max(values):,}")
            console.print(table)

        run_fn(body)

    @app.command("prepare")
    def prepare(
        every: bool = typer.Option(False, "--all", help="rewrite every building's bytes, not only the missing ones"),
        data_dir: Optional[Path] = data_dir_option,
    ) -> None:
        """Write the buildings' prepared z14 tile geometry where it is missing (rows loaded past the platform's
        writers, e.g. with SQL or GDAL), or for every building with --all (after a change of the catalogue's
        prepared_zoom or extent)."""
        settings = settings_fn(data_dir)

        def body():
            from cityops.tiles import prepared

            _, sessions, _ = store_fn(settings)
            with sessions() as session:
                n = prepared.fill(session.connection(), only_missing=not every)
                session.commit()
            console.print(f"{n:,} buildings prepared")

        run_fn(body)

    root.add_typer(app, name="tiles")
