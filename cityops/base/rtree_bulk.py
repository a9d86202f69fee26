"""Bulk build of a GeoPackage R*Tree (SQLite's rtree module) for a load into an empty table.

Why by hand: SQLite inserts R*Tree entries one at a time, at ~25 µs each, which was 60 % of a large
GeoPackage import; no library writes SQLite's R*Tree. So the index is packed bottom-up (a Hilbert-style
packed R-tree: entries sorted by the Z-order key of their centre, nodes filled in that order) and its
three shadow tables are written directly, in the format of sqlite/ext/rtree/rtree.c:

- ``<name>_node(nodeno, data)``: node 1 is the root; ``data`` is the node size (the root's length) of
  big-endian bytes: u16 tree depth (root only), u16 cell count, then cells of i64 id + 4 × f32
  (minx, maxx, miny, maxy), min rounded down and max up as the module does;
- ``<name>_rowid(rowid, nodeno)``: the leaf holding each entry;
- ``<name>_parent(nodeno, parentnode)``: the parent of each non-root node.

Memory stays bounded: up to ``IN_MEMORY`` entries wait in NumPy arrays (48 bytes each) and are sorted there;
a larger load moves them to a temporary table with their sort key and sorts there (the temporary table's
insert and sorted read were ~40 % of the R*Tree's cost at 100,000 features). Leaves are written as the
sorted entries stream past; only the upper levels (one entry per 51 features) are held.
``rtreecheck()`` validates the result in the tests.
"""

from __future__ import annotations

import struct

import numpy as np
import shapely
from sqlalchemy import Connection

from cityops.core.bulk import grouped, insert_grouped

_CELL = 24  # i64 id + 4 × f32
_CHUNK = 51 * 2000  # entries read per step from the sorted temporary table
#: Entries held in memory before they move to the temporary table: 2,000,000 × 48 bytes ≈ 92 MiB at most.
IN_MEMORY = 2_000_000


def _zorder(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Morton key of lon/lat on a 2^16 × 2^16 grid over the globe: near in space, near in the key."""
    def spread(v):
        v = v.astype(np.uint64)
        for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
            v = (v | (v << np.uint64(shift))) & np.uint64(mask)
        return v
    gx = np.clip((x + 180.0) / 360.0 * 65535, 0, 65535)
    gy = np.clip((y + 90.0) / 180.0 * 65535, 0, 65535)
    return (spread(gx) | (spread(gy) << np.uint64(1))).astype(np.int64)


def _f32_down(v: np.ndarray) -> np.ndarray:
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) > v, np.nextafter(f, np.float32(-np.inf)), f)


def _f32_up(v: np.ndarray) -> np.ndarray:
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) < v, np.nextafter(f, np.float32(np.inf)), f)


def _cells(ids: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Cells as a big-endian record array: id, minx, maxx, miny, maxy."""
    cells = np.empty(len(ids), dtype=[("id", ">i8"), ("minx", ">f4"), ("maxx", ">f4"), ("miny", ">f4"), ("maxy", ">f4")])
    cells["id"] = ids
    cells["minx"], cells["maxx"] = _f32_down(boxes[:, 0]), _f32_up(boxes[:, 1])
    cells["miny"], cells["maxy"] = _f32_down(boxes[:, 2]), _f32_up(boxes[:, 3])
    return cells


class DeferredRtree:
    """Collects (id, bounds) during a load and builds the R*Tree at the end. Use only when the R*Tree is
    empty at the start (``usable``); otherwise insert entries the ordinary way."""

    def __init__(self, conn: Connection, table: str, column: str = "geom"):
        self.conn = conn
        self.name = f"rtree_{table}_{column}"
        self.temp = f"bulk_rtree_{table}"
        self.node_size = conn.exec_driver_sql(f"SELECT length(data) FROM {self.name}_node WHERE nodeno = 1").scalar()
        self.usable = bool(self.node_size) and not conn.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM {self.name})").scalar()
        self.capacity = (self.node_size - 4) // _CELL if self.node_size else 0
        self._held: list[tuple[np.ndarray, np.ndarray]] = []  # (keys, rows of id, minx, maxx, miny, maxy)
        self._count = 0
        self._spilled = False  # the entries are in the temporary table (a load larger than IN_MEMORY)

    def add(self, ids, geoms, *, bounds: np.ndarray | None = None) -> None:
        """Entries for ``ids``; ``bounds``: ``shapely.bounds(geoms)`` when the caller has them already."""
        geoms = np.asarray(geoms, dtype=object)
        ids = np.asarray(ids)
        keep = shapely.is_geometry(geoms) & ~shapely.is_empty(geoms)
        if not keep.any():
            return
        b = shapely.bounds(geoms[keep]) if bounds is None else bounds[keep]
        key = _zorder((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2)
        rows = np.column_stack((ids[keep].astype(float), b[:, 0], b[:, 2], b[:, 1], b[:, 3]))
        self._count += len(rows)
        if not self._spilled and self._count > IN_MEMORY:
            self.conn.exec_driver_sql(f"CREATE TEMP TABLE {self.temp} (key INTEGER, id INTEGER, minx REAL, "
                                      "maxx REAL, miny REAL, maxy REAL)")
            self._spilled = True
            for k, r in self._held:
                self._spill(k, r)
            self._held = []
        if self._spilled:
            self._spill(key, rows)
        else:
            self._held.append((key, rows))

    def _spill(self, key: np.ndarray, rows: np.ndarray) -> None:
        self.conn.exec_driver_sql(f"INSERT INTO {self.temp} VALUES (?, ?, ?, ?, ?, ?)", list(zip(
            key.tolist(), rows[:, 0].astype(np.int64).tolist(), *(rows[:, i].tolist() for i in range(1, 5)))))

    def discard(self) -> None:
        """Drop what was collected (the load failed; its transaction is being abandoned)."""
        self._held = []
        if self._spilled:
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{self.temp}")

    def _sorted_chunks(self):
        """The entries as (n, 5) arrays of id, minx, maxx, miny, maxy in (key, id) order."""
        if not self._spilled:
            if self._held:
                keys = np.concatenate([k for k, _ in self._held])
                rows = np.concatenate([r for _, r in self._held])
                self._held = []
                order = np.lexsort((rows[:, 0], keys))
                for start in range(0, len(order), _CHUNK):
                    yield rows[order[start:start + _CHUNK]]
            return
        # The driver's own cursor (plain tuples): NumPy probing SQLAlchemy rows for array protocols is slow.
        result = self.conn.connection.driver_connection.cursor()
        result.execute(f"SELECT id, minx, maxx, miny, maxy FROM {self.temp} ORDER BY key, id")
        while rows := result.fetchmany(_CHUNK):
            yield np.array(rows, dtype=float)
        self.conn.exec_driver_sql(f"DROP TABLE {self.temp}")

    def _node(self, depth: int, cells: np.ndarray) -> bytes:
        head = np.array([depth, len(cells)], dtype=">u2").tobytes()
        body = cells.tobytes()
        return head + body + bytes(self.node_size - 4 - len(body))

    def finish(self) -> None:
        """Write the packed tree and drop the temporary table."""
        m = self.capacity
        total = self._count
        if total == 0:
            return
        next_node = 2
        level_ids, level_boxes = [], []  # one entry per leaf: its node number and bounds
        single_leaf = total <= m
        chunks = self._sorted_chunks()
        pending = np.empty((0, 5))
        while True:
            rows = next(chunks, None)
            if rows is not None:
                pending = np.vstack((pending, rows))
            if not len(pending):
                break
            full = len(pending) // m * m if rows is not None else len(pending)
            chunk, pending = pending[:full], pending[full:]
            if len(chunk):
                # The chunk's leaves at once: one cell array, cut into nodes of m cells (per-leaf NumPy calls
                # were half of the R*Tree's cost).
                starts = np.arange(0, len(chunk), m)
                counts = np.diff(np.append(starts, len(chunk)))
                nodenos = np.array([1]) if single_leaf else np.arange(next_node, next_node + len(starts))
                next_node += 0 if single_leaf else len(starts)
                ids = chunk[:, 0].astype(np.int64)
                raw = _cells(ids, chunk[:, 1:]).tobytes()
                nodes = []
                for nodeno, start, count in zip(nodenos.tolist(), starts.tolist(), counts.tolist()):
                    body = raw[start * _CELL:(start + count) * _CELL]
                    nodes.append((nodeno, struct.pack(">HH", 0, count) + body + bytes(self.node_size - 4 - len(body))))
                level_ids.extend(nodenos.tolist())
                level_boxes.append(np.column_stack((np.minimum.reduceat(chunk[:, 1], starts),
                                                    np.maximum.reduceat(chunk[:, 2], starts),
                                                    np.minimum.reduceat(chunk[:, 3], starts),
                                                    np.maximum.reduceat(chunk[:, 4], starts))))
                self._write(nodes, list(zip(ids.tolist(), np.repeat(nodenos, counts).tolist())), [])
            if rows is None:
                break
        if single_leaf:
            return
        depth = 0
        ids, boxes = np.array(level_ids, dtype=np.int64), np.concatenate(level_boxes)
        while True:  # upper levels, packed in the same order, until one node (the root) remains
            depth += 1
            groups = range(0, len(ids), m)
            is_root = len(ids) <= m
            nodes, parents, up_ids, up_boxes = [], [], [], []
            for start in groups:
                child_ids, child_boxes = ids[start:start + m], boxes[start:start + m]
                nodeno = 1 if is_root else next_node
                next_node += 0 if is_root else 1
                nodes.append((nodeno, self._node(depth if is_root else 0, _cells(child_ids, child_boxes))))
                parents.extend(zip(child_ids.tolist(), [nodeno] * len(child_ids)))
                up_ids.append(nodeno)
                up_boxes.append((child_boxes[:, 0].min(), child_boxes[:, 1].max(), child_boxes[:, 2].min(),
                                 child_boxes[:, 3].max()))
            self._write(nodes, [], parents)
            if is_root:
                return
            ids, boxes = np.array(up_ids, dtype=np.int64), np.array(up_boxes)

    def _write(self, nodes: list, rowids: list, parents: list) -> None:
        root = [n for n in nodes if n[0] == 1]
        others = [n for n in nodes if n[0] != 1]
        if root:
            self.conn.exec_driver_sql(f"UPDATE {self.name}_node SET data = ? WHERE nodeno = 1", (root[0][1],))
        # Many rows per statement (``insert_grouped``): one entry of ``_rowid`` per feature.
        for table, columns, rows in (("node", "nodeno, data", others), ("rowid", "rowid, nodeno", rowids),
                                     ("parent", "nodeno, parentnode", parents)):
            if rows:
                insert_grouped(self.conn, f"INSERT INTO {self.name}_{table} ({columns}) VALUES ", "(?, ?)", grouped(rows))
