"""PostgreSQL settled before a measure: its dirty pages written out by a ``CHECKPOINT`` of our own.

Why: PostgreSQL checkpoints every ``checkpoint_timeout`` (5 min by default) and whenever the WAL since the last one
nears ``max_wal_size``. A checkpoint that the previous measure's writes (or a district built just before) made due
runs during the next one: its page writes compete for the disk, and after it began, each page's first change
writes the whole page to the WAL, so commits wait longer. On 2026-12-07 a time-triggered checkpoint covered one
intake open loop and took its p99 from 62–77 ms to 1.7 s. A checkpoint just before a measure starts its ~5 minutes
afresh (the server counts the timeout from the last checkpoint of any kind), so a measure shorter than that meets
no time-triggered one, and one triggered by WAL volume only if it writes about half of ``max_wal_size`` (on PostGIS
the intake sweep wrote up to 511 MB, near the ~540 MB at which the 1 GB default starts one: it checkpoints again
before its open loop); the peer or raw limit beside it is measured after the same call. A deployment meets checkpoints
all the time: the README (Configuration) says how to spread them.
"""

from __future__ import annotations

import os

ADMIN = os.environ.get("CITYOPS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def checkpoint(url: str | None = None) -> None:
    """Run ``CHECKPOINT`` on the server of ``url`` (default: the benchmarks' admin URL). Where it cannot (no server,
    or a role without ``pg_checkpoint``) the measure runs as it finds the server."""
    import psycopg

    try:
        with psycopg.connect((url or ADMIN).replace("postgresql+psycopg://", "postgresql://"), autocommit=True,
                             connect_timeout=5) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.Error:
        pass
