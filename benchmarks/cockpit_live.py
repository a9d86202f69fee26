"""A fact reaching an open cockpit while the district ingests sensor data (issue: "< 1 s p95 at 10,000 obs/s"):

    .venv/bin/python benchmarks/cockpit_live.py --data-dir DIR [--seconds 60] [--load 10000] [--probes 20]

``DIR`` holds a built default demo district (``benchmarks/web.py`` builds one; a copy is fine: this script adds
600 water-level datastreams to its first grid and an API key, as ``benchmarks/sensing_ingest.py`` does). The server
runs in its own process (uvicorn, the embedded store), as in production; this process is the load generator,
the probes and the browser.

1. A leader's cockpit (数字驾驶舱) is open in headless Chromium (1280×800), its live stream connected.
2. A background load of ``--load`` observations/s is posted to ``POST /api/sensing/observations`` (batches paced
   by what is owed since the start, as in sensing_ingest.py), over 200 datastreams.
3. Every ~1.5 s one probe, alternately:
   - **a case created** (``POST /api/events/cases`` at a grid's point): latency = from the answer (the case is
     committed) to the first animation frame at which the cockpit's key number "open cases" (``key-cases_open``,
     the district's value) shows the new count;
   - **an alarm raised** (one observation above the waterlogging ladder on a probe datastream, through the same
     ingest route): latency = from the answer (the observation committed; the alarm follows through the rules) to
     the frame at which "open alarms" (``key-alarms_open``) moves.
   The page records the time of every change of those numbers (``Date.now()`` in a ``requestAnimationFrame``
   loop; this process reads the same clock), so the figure is what a person watching the wall sees.

Prints p50/p95/max per kind beside the target, the background rate achieved and the load average. A fact whose
number has not moved before the next fact of its kind is sent (about 3 s) counts as missed (latency infinite);
whether it was late or lost shows at the end: the page's numbers must come to the stored ones.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sensing_ingest import _JSON, N_STREAMS, SERVE, Clock, _body, _iso  # noqa: E402
from web import ARGS, CHROMIUM, PASSWORD, logged_in  # noqa: E402

from report import record  # noqa: E402
from tests.conftest import free_port, wait_for_port  # noqa: E402

#: In the page: every change of the watched key numbers, with the wall clock of the frame that first showed it.
WATCH = """
(() => {
  window.__keys = [];
  const last = {};
  function check() {
    for (const key of ['cases_open', 'alarms_open']) {
      const el = document.querySelector(`[data-testid="key-${key}"]`);
      const v = el ? el.dataset.value : undefined;
      if (v !== undefined && v !== '' && v !== last[key]) {
        window.__keys.push({key, value: Number(v), at: Date.now()});
        last[key] = v;
      }
    }
    requestAnimationFrame(check);
  }
  requestAnimationFrame(check);
})();
"""


def setup_streams(sessions) -> tuple[list[int], list[int], str]:
    """200 water-level datastreams for the load and 400 probe datastreams (a cleared alarm's key is suppressed for
    a while, so each probe raises a fresh alarm on its own stream) in the first grid, and an API key of admin."""
    from sqlalchemy import select

    from cityops.identity import service
    from cityops.identity.models import User
    from cityops.identity.scope import Scope
    from cityops.org.models import Unit
    from cityops.sensing import sta
    from cityops.sensing.demo import _catalogue_entities, add_device

    with sessions() as s:
        grid = s.scalar(select(Unit).where(Unit.level == "grid").order_by(Unit.code))
        w = sta.Writer(sta.Ctx(s, Scope(all_units=True), "", catalogue=True), "bench")
        ents = _catalogue_entities(w)
        p = grid.geom.representative_point()
        ids = [add_device(w, ents, "water_level", f"bench{i}", grid, p)[0] for i in range(N_STREAMS)]
        alarm_ds = [add_device(w, ents, "water_level", f"probe{i}", grid, p)[0] for i in range(400)]
        user = s.scalar(select(User).where(User.username == "admin"))
        raw, _ = service.issue_token(s, "bench", user, kind="api_key", name="cockpit-live-bench")
        s.commit()
    return ids, alarm_ds, raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--load", type=int, default=10_000, help="background observations/s")
    ap.add_argument("--probes", type=int, default=20, help="facts of each kind")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from cityops.core.db import make_engine, make_sessionmaker, migrate
    from cityops.core.settings import Settings

    settings = Settings(data_dir=args.data_dir, log_json=False)
    engine = make_engine(settings)
    migrate(engine)  # a district built by an older version
    ids, alarm_ds, token = setup_streams(make_sessionmaker(engine))
    engine.dispose()

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(args.data_dir), "", str(port)], cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    loaded = [0]
    try:
        wait_for_port(server, port, 180)
        auth = {"Authorization": f"Bearer {token}"}
        admin = {"Authorization": "Bearer " + httpx.post(f"{base}/api/auth/login", json={"username": "admin", "password": PASSWORD},
                                                         timeout=60).json()["access_token"]}
        grid = httpx.get(f"{base}/api/units", params={"level": "grid", "limit": 1}, headers=admin, timeout=60).json()["items"][0]["code"]
        g = httpx.get(f"{base}/api/units/{grid}", params={"geometry": True}, headers=admin, timeout=60).json()
        from shapely.geometry import shape

        point = shape(g["geometry"]).representative_point()
        clock = Clock()
        load_avg_before = os.getloadavg()

        def load() -> None:
            with httpx.Client(base_url=base, headers=auth, timeout=60) as c:
                begin = time.perf_counter()
                while not stop.is_set():
                    owed = int((time.perf_counter() - begin) * args.load) - loaded[0]
                    if owed < args.load // 20:
                        time.sleep(0.05)
                        continue
                    n = min(owed, args.load)
                    r = c.post("/api/sensing/observations", content=_body(ids, clock, n), headers=_JSON)
                    if r.status_code == 201:
                        loaded[0] += n

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN", service_workers="block")
            logged_in(context, base, "leader")
            context.add_init_script(WATCH)
            page = context.new_page()
            page.goto(base + "/cockpit")
            page.wait_for_function("document.body.dataset.cockpitReady === '1'", timeout=180_000)
            page.wait_for_selector('[data-testid="live-state"].live', timeout=120_000)
            page.wait_for_function("window.__keys.some((k) => k.key === 'cases_open') && window.__keys.some((k) => k.key === 'alarms_open')",
                                   timeout=120_000)
            loader = threading.Thread(target=load, daemon=True)
            loader.start()
            time.sleep(5)  # the load at its rate before the first probe
            started = time.perf_counter()
            sent: list[tuple[str, float]] = []
            with httpx.Client(base_url=base, headers=admin, timeout=60) as c:
                for i in range(2 * args.probes):
                    if time.perf_counter() - started > args.seconds:
                        break
                    if i % 2 == 0:
                        r = c.post("/api/events/cases", json={"class_code": "06010", "lon": point.x, "lat": point.y,
                                                              "description": f"驾驶舱时延测试 {i}"})
                        kind = "cases_open"
                    else:
                        r = c.post("/api/sensing/observations", headers=auth, json={"observations": [
                            {"datastream_id": alarm_ds[i], "phenomenonTime": _iso(clock.take(1)), "result": 60.0}]})
                        kind = "alarms_open"
                    r.raise_for_status()
                    sent.append((kind, time.time()))
                    time.sleep(1.5)
            time.sleep(3)
            elapsed = time.perf_counter() - started
            stop.set()
            changes = page.evaluate("window.__keys")
            # Late or lost: a fact not shown before the next one of its kind may still come; the page's numbers
            # must end equal to the stored ones (read again until they do, at most 60 s).
            final, until = None, time.monotonic() + 60
            with httpx.Client(base_url=base, headers=admin, timeout=60) as c:
                while True:
                    stored = {i["indicator"]: i["value"] for i in c.get("/api/indicators/values").json()["items"]
                              if i["indicator"] in ("cases_open", "alarms_open")}
                    shown = page.evaluate("Object.fromEntries(['cases_open', 'alarms_open'].map((k) => [k, Number("
                                          "document.querySelector(`[data-testid=\"key-${k}\"]`).dataset.value)]))")
                    final = (stored, shown)
                    if stored == shown or time.monotonic() > until:
                        break
                    time.sleep(0.5)
            browser.close()
        rate = loaded[0] / (elapsed + 5)
        rows = []
        for kind, label in (("cases_open", "a case created → open cases on the cockpit"),
                            ("alarms_open", "an alarm raised → open alarms on the cockpit")):
            lat = []
            for n, (k, t) in enumerate(sent):
                if k != kind:
                    continue
                nxt = next((t2 for k2, t2 in sent[n + 1:] if k2 == kind), float("inf"))
                seen = [c["at"] / 1000 for c in changes if c["key"] == kind and t <= c["at"] / 1000 < nxt]
                lat.append(seen[0] - t if seen else float("inf"))
            lat.sort()
            ok = [x for x in lat if x != float("inf")]
            p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else float("nan")
            rows.append((label, len(lat), len(lat) - len(ok), statistics.median(lat) if lat else float("nan"), p95,
                         max(ok) if ok else float("nan")))
        print(f"\ncockpit live latency, {len(sent)} facts over {elapsed:.0f} s, background ingest "
              f"{rate:,.0f} obs/s (asked {args.load:,})")
        print(f"{'fact':48}  {'n':>3}  {'missed':>6}  {'p50 s':>6}  {'p95 s':>6}  {'max s':>6}  target p95 < 1 s")
        for label, n, missed, p50, p95, mx in rows:
            print(f"{label:48}  {n:>3}  {missed:>6}  {p50:6.2f}  {p95:6.2f}  {mx:6.2f}  {'ok' if p95 < 1 else 'FAIL'}")
        stored, shown = final
        print(f"the cockpit's final numbers {shown} {'equal' if stored == shown else 'DIFFER from'} the stored ones {stored}")
        print(f"load average: {' '.join(f'{x:.2f}' for x in load_avg_before)} at the start, "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end; cores: {os.cpu_count()}")
        print(json.dumps({"rate": rate, "rows": rows}))
        for label, n, missed, p50, p95, mx in rows:
            reached = rate >= 0.9 * args.load
            note = "" if reached else (f"the background ingest reached {rate:,.0f} of {args.load:,} obs/s: "
                                       f"measured under a lighter load than the target's")
            if missed:
                note = (note + "; " if note else "") + f"{missed} of {n} facts not shown before the next of their kind"
            if stored != shown:
                note = (note + "; " if note else "") + f"the cockpit ended at {shown}, the stored values are {stored}"
            record(f"{label} (under {args.load:,} obs/s ingest)", f"p95 {p95:.2f} s", f"{n} facts, p50 {p50:.2f} s",
                   p95 / 1.0, "p95 < 1 s (ratio to it < 1)", (p95 < 1) if reached else None, note=note)
    finally:
        stop.set()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
