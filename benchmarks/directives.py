"""Directives (一键智达) at the district's scale: one directive to the people on duty in every unit above the grids
(~530 units: the district, its townships and villages), and a second one to ~4,500 people (every grid worker and
village cadre of the district). Measured from the sender's call to the moment the notification service's
dispatcher has handed every delivery to its channel (in-app inbox here: the channel every person has), and the
receipt board read while it happens (what the live board reloads on a bulk change).

Beside it, the raw limit on the same database: the receipt rows alone written by one executemany INSERT (no
resolution, no notifications, no channel) — what any implementation pays to write them down.

Only the demo steps a directive needs are built (the org tree, people, users, duty rosters): the same district
as `cityops demo`, without buildings, sensors or cases.

    .venv/bin/python benchmarks/directives.py [--backend sqlite|postgis|both] [--runs 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from report import record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select, text  # noqa: E402

from cityops.core import audit  # noqa: E402
from cityops.core.bus import Bus  # noqa: E402
from cityops.core.db import make_engine, make_sessionmaker, migrate  # noqa: E402
from cityops.core.settings import Settings  # noqa: E402
import cityops.models  # noqa: E402,F401  (registers every capability's demo steps)
from cityops.demo.generator import STEPS, DemoConfig, DemoContext, load_catalogue  # noqa: E402
from cityops.directives import service  # noqa: E402
from cityops.directives.models import Receipt  # noqa: E402
from cityops.identity.scope import Scope  # noqa: E402
from cityops.notify import service as notify  # noqa: E402
from cityops.notify.dispatch import Dispatcher  # noqa: E402
from cityops.notify.models import Delivery, Message  # noqa: E402
from cityops.org.levels import load_levels  # noqa: E402
from cityops.org.models import Unit  # noqa: E402
from cityops.org.service import OrgConfig  # noqa: E402

NEEDED = ("hierarchy", "places", "departments_people", "users", "duty")
TARGET_S = 5.0


def build(settings: Settings) -> None:
    engine = make_engine(settings)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    org = OrgConfig(load_levels(settings.grid_code_length), settings.grid_code_length, settings.topology_tolerance_m2,
                    settings.metric_crs)
    config = DemoConfig()
    ctx = DemoContext(sessions, org, config, load_catalogue(), random.Random(config.seed))
    for name, step in STEPS:
        if name in NEEDED:
            step(ctx)
    if engine.dialect.name == "postgresql":
        with engine.begin() as c:
            c.execute(text("ANALYZE"))
    engine.dispose()


def one_run(settings: Settings, targets: list[dict], cascade: str | None = None) -> dict:
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    notify.configure(settings)
    bus = Bus(engine, settings)
    dispatcher = Dispatcher(bus, settings)
    with sessions() as s:
        district = s.scalar(select(Unit.path).where(Unit.level == "district"))
    scope = Scope(unit_paths=(district,))
    t0 = time.perf_counter()
    with sessions() as s:
        d = service.issue(s, audit.Actor("bench"), scope, title="关于做好强降雨防范工作的紧急通知", body="请立即签收并落实。",
                          issuer_name="区值班员", targets=targets, cascade=cascade)
        s.commit()
        did = d.id
    committed = time.perf_counter() - t0
    with sessions() as s:
        notes = list(s.scalars(select(Message.id).where(Message.subject_kind == "directive", Message.subject_id == str(did))))
        deliveries = s.scalar(select(func.count()).select_from(Delivery).where(Delivery.message_id.in_(notes)))
    # The dispatcher's rounds, as the lease holder runs them, until every delivery is handed over.
    while dispatcher.round():
        pass
    with sessions() as s:
        waiting = s.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.message_id.in_(notes), Delivery.state.in_(("queued", "retry", "sending"))))
        handed = s.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.message_id.in_(notes), Delivery.state.in_(("sent", "delivered"))))
    total = time.perf_counter() - t0
    tb = time.perf_counter()
    with sessions() as s:
        board = service.board(s, scope, did)
    board_s = time.perf_counter() - tb
    with sessions() as s:
        receipts = s.scalar(select(func.count()).select_from(Receipt).where(Receipt.directive_id == did))
        people = len({p["person_id"] for r in s.scalars(select(Receipt.recipients).where(Receipt.directive_id == did)) for p in r})
    dispatcher.stop()
    engine.dispose()
    assert waiting == 0, f"{waiting} deliveries still waiting"
    assert board["totals"]["total"] == receipts
    return {"receipts": receipts, "people": people, "deliveries": deliveries, "handed": handed, "committed_s": committed,
            "handed_s": total, "board_s": board_s}


def raw_limit(settings: Settings, n: int) -> float:
    """n receipt-shaped rows in one executemany INSERT and one commit (into a scratch table)."""
    engine = make_engine(settings)
    with engine.begin() as c:
        c.execute(text("CREATE TABLE IF NOT EXISTS bench_receipts (id INTEGER PRIMARY KEY, directive_id INTEGER, unit_code TEXT,"
                       " unit_path TEXT, name TEXT, level TEXT, recipients TEXT, state TEXT, sent_at TEXT)"))
        c.execute(text("DELETE FROM bench_receipts"))
    rows = [{"id": i + 1, "directive_id": 1, "unit_code": f"{i:09d}", "unit_path": f"/500154/{i:09d}/", "name": "某村", "level": "village",
             "recipients": '[{"person_id": 1, "name": "某人"}]', "state": "sent", "sent_at": "2026-07-08T12:00:00+00:00"}
            for i in range(n)]
    t = time.perf_counter()
    with engine.begin() as c:
        c.execute(text("INSERT INTO bench_receipts (id, directive_id, unit_code, unit_path, name, level, recipients, state, sent_at)"
                       " VALUES (:id, :directive_id, :unit_code, :unit_path, :name, :level, :recipients, :state, :sent_at)"), rows)
    elapsed = time.perf_counter() - t
    with engine.begin() as c:
        c.execute(text("DROP TABLE bench_receipts"))
    engine.dispose()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("sqlite", "postgis", "both"), default="sqlite")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    backends = ["sqlite", "postgis"] if args.backend == "both" else [args.backend]
    import os

    print(f"load average {os.getloadavg()}")
    for backend in backends:
        work = Path(tempfile.mkdtemp(prefix=f"cityops-bench-directives-{backend}-"))
        overrides = {}
        cleanup = None
        if backend == "postgis":
            from tests.conftest import create_pg_database, drop_pg_database, pg_database_url

            name = create_pg_database("cityops_bench_directives")
            overrides["database_url"] = pg_database_url(name)
            cleanup = lambda: drop_pg_database(name)  # noqa: E731
        settings = Settings(data_dir=work, secret_key="bench", log_json=False, wiring=False, **overrides)
        t = time.perf_counter()
        build(settings)
        print(f"[{backend}] district (org tree, people, rosters) built in {time.perf_counter() - t:.0f} s")
        cases = [
            ("every unit above the grids, to its people on duty",
             [{"kind": "level", "level": lv} for lv in ("district", "township", "village")], None),
            ("every grid worker and village cadre",
             [{"kind": "posts", "post": "grid_worker"}, {"kind": "posts", "post": "village_cadre"}], None),
        ]
        for label, targets, cascade in cases:
            results = [one_run(settings, targets, cascade) for _ in range(args.runs)]
            med = {k: statistics.median(r[k] for r in results) for k in ("committed_s", "handed_s", "board_s")}
            r0 = results[0]
            raw = statistics.median(raw_limit(settings, r0["receipts"]) for _ in range(args.runs))
            print(f"[{backend}] {label}: {r0['receipts']} receipts, {r0['people']} people, {r0['deliveries']} deliveries "
                  f"({r0['handed']} handed to their channel)")
            print(f"    issued and committed {med['committed_s']:.2f} s · every delivery handed {med['handed_s']:.2f} s "
                  f"(target < {TARGET_S:.0f} s) · board read {med['board_s'] * 1000:.0f} ms · "
                  f"raw insert of the receipt rows {raw * 1000:.0f} ms (ratio {med['handed_s'] / raw:.0f}×)")
            record(f"directive to {r0['people']} people ({r0['receipts']} units), {backend}", f"{med['handed_s']:.2f} s",
                   f"raw insert {raw * 1000:.0f} ms", med["handed_s"] / raw, f"< {TARGET_S:.0f} s", med["handed_s"] < TARGET_S)
        if cleanup:
            cleanup()
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
