"""Web app benchmark in headless Chromium (Debian's, through Playwright; WebGL from SwiftShader):

    .venv/bin/python benchmarks/web.py [--data-dir DIR] [--runs 5] [--fps-runs 3] [--pan-seconds 5]
        [--fps-sizes 1280x800,1920x1080] [--only map,phone,cockpit,fps] [--profile]

Without ``--data-dir`` the default demo district (4,000 grids, ~100,000 buildings) is built into a temporary
directory, removed afterwards; a given directory is reused when it already holds a district. The 老沟湾 landslide
response is started (orange) so every live layer has something to draw, and the server runs in this process.

Measured (targets from the issue; the exact definitions beside PROBE below and in docs/benchmarks.md):

1. **First meaningful paint on "Fast 3G"** — the network throttled with the DevTools protocol
   (``Network.emulateNetworkConditions``: 562.5 ms latency, 1.6 Mb/s × 0.9 down, 750 kb/s × 0.9 up; Puppeteer's
   "Fast 3G" profile), logged in already (the session in localStorage and the session cookie, as the login leaves them):
   - operations map (1440×900): the first frame showing the base map of the view (district outline, relief, place
     names) and the live things of the first view, whoever draws them: the server's drawing of the first view
     (index.html asks for it before any script) or MapLibre. Target < 2 s. Beside it "map interactive": MapLibre
     has drawn the base map and the live layers (the figure before the server's drawing existed).
   - phone command room (390×844): the first frame showing the households list with its summary, whoever draws it:
     the server (written into phone.html for the session cookie's user) or the app. Target < 1.5 s. Beside it the
     app's own list (the figure before the server's list existed).
   Each cold (empty cache), warm (a second visit with the HTTP cache of the first; service worker blocked) and
   repeat visit with the service worker the first visit installed (the app shell from its cache; API and tiles
   cross the throttle, checked). Median of ``--runs``. One profiled cold load per page gives the requests, the
   bytes on the wire and the floor they set (``--profile`` prints every request).
   - cockpit (1920×1080, the big screen; a leader of the district): the first frame with the runway cards' values
     and the district outline on its map, **unthrottled** (the wall sits on the center's LAN), beside the operations
     map for the same user. Target < 2 s.
2. **Map frame rate** — every live layer on, the base map at zoom 11 over 义和镇, the map panned on every
   animation frame for ``--pan-seconds``; frames = MapLibre ``render`` events per second of panning, 1280×800 and
   1920×1080. Target > 30 frames/s. Beside it the base map alone and the raw limit of the browser on this machine
   (the background layer alone). Beside each rate, the CPU time per drawn frame of Chromium's GPU process (where
   SwiftShader draws) and of the page's renderer, from /proc: what a frame costs, whatever the machine's load.
   On WebGL in software the app draws the moving map at half resolution, lower on a screen larger than 1280×800 (at
   most the drawn pixels of 1280×800 at half: 0.35 at 1920×1080), full resolution at rest: the first row
   is the map as the app draws it, the second the same map kept at full resolution while moving (the app's own
   switch, localStorage ``cityops.map.fullResolution``), as are the base map and raw limit rows. On WebGL in software
   the app also draws the static base map (relief, contours, water, roads, unit boundaries) from the server's raster
   tiles; the "vector base map" row is the same map with that switched off (localStorage ``cityops.map.vectorBase``).
   ``--fps-modes`` chooses the rows.

Prints a table with each figure beside its target and the load average; exit code 0 (a report).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import sys

import httpx
from shapely.geometry import Point

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.conftest.serve_in_thread
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--use-gl=angle", "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader", "--disable-background-networking", "--disable-component-update",
        "--disable-features=Translate,OptimizationHints", "--no-first-run"]
FAST_3G = {"offline": False, "latency": 562.5, "downloadThroughput": 1.6 * 1_000_000 / 8 * 0.9,
           "uploadThroughput": 750 * 1000 / 8 * 0.9}
PASSWORD = "cityops-demo"

# Recorded in the page from its very start, on every animation frame (so a figure is the start of the first frame
# that already showed it, give or take one frame):
#   __overview    — operations map: the server's drawing of the first view (GET /api/map/overview, shown by
#                   index.html before any script) is in the page with the district outline, the relief, the place
#                   names and at least one live thing (risk point, alarm, incident, case or shelter);
#   __base        — operations map: MapLibre has drawn the base map: the district outline and the relief;
#   __interactive — operations map: MapLibre has drawn the base map AND the live layers of the first view: every live
#                   layer's data has arrived (the page sets data-live-loaded once each source has its data), every
#                   live source is parsed (MapLibre's isSourceLoaded) and at least one live feature is on screen
#                   (queryRenderedFeatures). The map can be used from here on;
#   __firstView   — phone: the server's households list (written into phone.html for the session cookie's user) is
#                   shown: the incident's name, its summary (households left / moved / total) and the households
#                   (or a total of none);
#   __appList     — phone: the app's own list rendered with its summary (the figure before the server's list existed);
#   __fmp         — first meaningful paint. Operations map: the first frame that shows the district's base map and
#                   the live things of the first view, whoever drew them: the earlier of __overview and
#                   __interactive. Phone: the households list with its summary (the incident's name,
#                   households left / moved / total), whoever drew it: the earlier of __firstView and __appList. Cockpit: the runway cards' values and the district outline.
#   __done        — nothing more to wait for (the map: __interactive).
PROBE = """
(() => {
  window.__base = null; window.__fmp = null; window.__overview = null; window.__interactive = null; window.__done = false;
  window.__firstView = null; window.__appList = null;
  const LIVE_SOURCES = ['incidents', 'risk_points', 'alarms', 'sensors', 'cases', 'shelters'];
  const LIVE_LAYERS = ['incidents-fill', 'incidents-marker', 'risk_points', 'alarms', 'sensors', 'cases', 'cases-clusters', 'shelters'];
  const seen = (now) => { if (window.__fmp === null) window.__fmp = now; };
  // The cheap conditions first: a query of rendered features on every frame would slow the page it measures.
  function check() {
    const now = performance.now();
    if (window.__overview === null) {
      const svg = document.querySelector('#overview > svg');
      if (svg && svg.querySelector('.base .district') && svg.querySelector('.base .relief') && svg.querySelector('.base .labels text')
          && Number(svg.dataset.live) > 0 && svg.querySelector('.live-things .live')
          && svg.getBoundingClientRect().width > 0) { window.__overview = now; seen(now); }
    }
    const m = window.cityopsMap;
    if (m && m.getLayer && m.getLayer('district-line') && m.isSourceLoaded('basemap')) {
      try {
        if (window.__base === null && m.queryRenderedFeatures({layers: ['district-line']}).length
            && m.queryRenderedFeatures({layers: ['relief']}).length) window.__base = now;
        if (window.__base !== null && document.body.dataset.liveLoaded
            && LIVE_SOURCES.filter((k) => m.getSource(k)).every((k) => m.isSourceLoaded(k))
            && m.queryRenderedFeatures({layers: LIVE_LAYERS.filter((id) => m.getLayer(id))}).length) {
          window.__interactive = now; seen(now); window.__done = true; return;
        }
      } catch (e) {}
    }
    const c = window.cityopsCockpitMap;
    if (c && c.getLayer && c.getLayer('district-line') && document.querySelector('[data-testid^="indicator-"][data-value]:not([data-value=""])')) {
      try {
        if (c.queryRenderedFeatures({layers: ['district-line']}).length) { seen(now); window.__done = true; return; }
      } catch (e) {}
    }
    if (window.__firstView === null) {
      const v = document.getElementById('first-view');
      if (v && !v.hidden && v.querySelector('.fv-title') && v.querySelector('.fv-counts[data-total]')
          && (v.querySelector('.fv-hh') || v.querySelector('.fv-counts[data-total="0"]'))
          && v.getBoundingClientRect().height > 0) { window.__firstView = now; seen(now); }
    }
    const summary = document.querySelector('#summary');
    if (summary && summary.dataset.total !== undefined && document.body.dataset.rendered) {
      window.__appList = now; seen(now); window.__done = true; return;
    }
    requestAnimationFrame(check);
  }
  requestAnimationFrame(check);
})();
"""


def build(data_dir: Path) -> None:
    from cityops.core.settings import Settings
    from cityops.core.db import make_engine, make_sessionmaker, migrate
    from cityops.demo.generator import build_demo
    from cityops.org.levels import load_levels
    from cityops.org.models import Unit
    from cityops.org.service import OrgConfig
    from sqlalchemy import select

    settings = Settings(data_dir=data_dir, log_json=False)
    engine = make_engine(settings)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        empty = s.scalar(select(Unit.id).limit(1)) is None
    if empty:
        started = time.perf_counter()
        build_demo(sessions, OrgConfig(load_levels(settings.grid_code_length), settings.grid_code_length,
                                       settings.topology_tolerance_m2, settings.metric_crs))
        print(f"demo district built in {time.perf_counter() - started:.0f} s")
    engine.dispose()


def start_incident(sessions, place) -> None:
    from cityops.core.spatial import buffer_m
    from cityops.tasks.plans import on_warning_level

    with sessions() as session:
        on_warning_level(session, risk_point_code="RP-LGW-001", hazard_type="landslide", level="orange",
                         unit_code=place["unit_code"], geometry=buffer_m(Point(place["lon"], place["lat"]), 30, "EPSG:4545"),
                         evidence={"benchmark": True})
        session.commit()


def logged_in(context, base: str, username: str) -> None:
    """``context`` logged in as ``username`` as the login page leaves a browser: the session in localStorage and the
    session cookie the login answer sets (which lets the server write a page's first view into its HTML)."""
    answer = httpx.post(f"{base}/api/auth/login", json={"username": username, "password": PASSWORD}, timeout=60)
    tok = answer.json()
    me = httpx.get(f"{base}/api/auth/me", headers={"Authorization": f"Bearer {tok['access_token']}"}, timeout=60).json()
    data = json.dumps({"token": tok["access_token"], "expiresAt": tok["expires_at"], "user": me})
    context.add_init_script(f"localStorage.setItem('cityops.session', {json.dumps(data)});")
    context.add_cookies([{"name": name, "value": value, "url": base, "httpOnly": True, "sameSite": "Strict"}
                         for name, value in answer.cookies.items()])


def first_paint(browser, base: str, path: str, username: str, viewport: dict, visit: str,
                network: dict | None = FAST_3G, profile: bool = False) -> tuple[float, dict, dict]:
    """(first meaningful paint, {"overview", "interactive", "base": seconds or None}, transfer summary), in seconds
    from navigation start.

    ``visit``: "cold" (empty cache), "warm" (a second visit with the HTTP cache of the first, no service worker)
    or "sw" (a second visit with the service worker the first installed: the app shell from its cache, the API
    and the tiles from the network, which passes through the throttle because the worker does not answer them).
    """
    context = browser.new_context(viewport=viewport, locale="zh-CN", service_workers="allow" if visit == "sw" else "block")
    logged_in(context, base, username)
    context.add_init_script(PROBE)
    if visit != "cold":  # a first visit fills the HTTP cache (and installs the service worker)
        page = context.new_page()
        page.goto(base + path)
        page.wait_for_function("window.__done", timeout=120_000)
        if visit == "sw":
            page.wait_for_function("""navigator.serviceWorker.ready.then(() => caches.keys())
                .then((keys) => Promise.all(keys.map((k) => caches.open(k).then((c) => c.keys()))))
                .then((lists) => lists.flat().some((r) => r.url.endsWith('/index.html')))""", timeout=120_000)
        page.close()
    page = context.new_page()
    finished = []
    if profile:
        context.on("requestfinished", lambda r: finished.append(r))
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    if network:
        cdp.send("Network.emulateNetworkConditions", network)
    page.goto(base + path, wait_until="commit")
    page.wait_for_function("window.__done", timeout=180_000, polling=100)
    fmp, overview, interactive, base_map, first_view, app_list = page.evaluate(
        "[window.__fmp, window.__overview, window.__interactive, window.__base, window.__firstView, window.__appList]")
    # Honest throttling: the page's API answers (through the service worker too) took at least the profile's latency.
    api_min, api_fastest = page.evaluate("""(() => { const e = performance.getEntriesByType('resource')
        .filter((e) => e.name.includes('/api/') && e.responseEnd > 0)
        // Tiles may come from the browser's HTTP cache on a second visit (Cache-Control: max-age=60): no transfer.
        .filter((e) => !(e.name.includes('/api/tiles/') && e.transferSize === 0))
        .map((e) => [e.responseEnd - e.startTime, e.name + ' (' + visit + ', ' + e.initiatorType + ', ' + e.transferSize + ' B)'])
        .sort((a, b) => a[0] - b[0]); return e[0] || [Infinity, '']; })()""".replace("' + visit + '", visit))
    summary = {"api_min_ms": api_min if network else None, "api_fastest": api_fastest}
    if profile:
        page.wait_for_timeout(2000)
        summary["requests"] = _requests(finished, base)
    context.close()
    parts = {k: (v / 1000 if v is not None else None)
             for k, v in (("overview", overview), ("interactive", interactive), ("base", base_map),
                          ("first_view", first_view), ("app_list", app_list))}
    return fmp / 1000, parts, summary


def _requests(finished, base: str) -> list[tuple]:
    """(start s, end s, bytes on the wire, encoding, type, path) of every request, workers' too (the tiles)."""
    t0 = min(r.timing["startTime"] for r in finished)
    rows = []
    for r in finished:
        timing = r.timing
        try:
            size = r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"]
        except Exception:  # noqa: BLE001 - a request the browser already forgot
            size = -1
        response = r.response()
        encoding = (response.headers.get("content-encoding") if response else None) or "-"
        start = (timing["startTime"] - t0) / 1000
        rows.append((start, start + max(timing["responseEnd"], 0) / 1000, size, encoding, r.resource_type,
                     r.url.replace(base, "")))
    return sorted(rows)


VISITS = {"cold": "cold", "warm": "warm (HTTP cache)", "sw": "repeat visit (service worker)"}
# The first row is the map as this browser shows it (on WebGL in software: drawn at half resolution or lower while it moves,
# at full resolution at rest; src/map/frames.js); every other row keeps full resolution while moving.
FRAME_MODES = {
    "all": "every live layer on",
    "all-vector": "every live layer on, vector base map",
    "all-full": "every live layer on, full resolution while moving",
    "base": "base map only (live layers hidden), full resolution",
    "background": "raw limit: the background layer alone, full resolution",
}


def frame_rate(browser, base: str, viewport: dict, centre, seconds: float, mode: str = "all") -> tuple[float, str, dict]:
    context = browser.new_context(viewport=viewport, locale="zh-CN", service_workers="block")
    logged_in(context, base, "district")
    if mode not in ("all", "all-vector"):  # the app's own switch: full resolution while the map moves
        context.add_init_script("localStorage.setItem('cityops.map.fullResolution', '1');")
    if mode == "all-vector":  # the app's own switch: the static base map as vectors, not the server's raster tiles
        context.add_init_script("localStorage.setItem('cityops.map.vectorBase', '1');")
    page = context.new_page()
    page.goto(base + "/")
    page.wait_for_function("document.body.dataset.liveLoaded === '1'", timeout=120_000)
    page.evaluate("([ll]) => window.cityopsMap.jumpTo({center: ll, zoom: 11})", [list(centre)])
    page.wait_for_function("window.cityopsMap.loaded() && window.cityopsMap.areTilesLoaded()", timeout=120_000)
    live_sources = ["incidents", "risk_points", "alarms", "sensors", "cases", "shelters", "cameras"]
    layers = page.evaluate("""(sources) => { const m = window.cityopsMap;
        return new Set(m.getStyle().layers.filter((l) => sources.includes(l.source)
          && m.getLayoutProperty(l.id, 'visibility') !== 'none').map((l) => l.source)).size; }""", live_sources)
    moving = page.evaluate("window.cityopsMap.getContainer().dataset.movingResolution || ''")
    raster = page.evaluate("window.cityopsMap.getContainer().dataset.rasterBase || ''")
    what = f"{layers} live layers on" + (f", moving at {moving} resolution" if moving else "") \
        + (", raster base map" if raster else ", vector base map")
    if mode not in ("all", "all-vector", "all-full"):
        page.evaluate("""([mode, sources]) => { const m = window.cityopsMap;
            for (const l of m.getStyle().layers) {
              if (mode === 'background' ? l.type !== 'background' : sources.includes(l.source)) m.setLayoutProperty(l.id, 'visibility', 'none');
            } }""", [mode, live_sources])
        page.wait_for_function("window.cityopsMap.loaded()", timeout=60_000)
    cpu_before, started = _browser_cpu(), time.perf_counter()
    result = page.evaluate("""(seconds) => new Promise((resolve) => {
        const m = window.cityopsMap; let frames = 0; const start = performance.now(); let dir = 1;
        m.on('render', () => { frames++; });
        function step(now) {
          if (now - start > seconds * 1000) { resolve(frames / ((performance.now() - start) / 1000)); return; }
          if (Math.floor((now - start) / 1000) % 2 === 1) dir = -1; else dir = 1;
          m.panBy([6 * dir, 3 * dir], {duration: 0});
          requestAnimationFrame(step);
        }
        requestAnimationFrame(step);
    })""", seconds)
    frames = result * (time.perf_counter() - started)
    cpu_after = _browser_cpu()
    # CPU time per drawn frame: what the frame costs, whatever share of the cores the machine's load leaves us.
    cpu = {kind: 1000 * (cpu_after.get(kind, 0) - cpu_before.get(kind, 0)) / max(frames, 1)
           for kind in ("gpu-process", "renderer")}
    context.close()
    return result, what, cpu


def _browser_cpu() -> dict[str, float]:
    """CPU seconds (user + system) so far of this script's Chromium processes, by process type (browser,
    gpu-process — where SwiftShader draws —, renderer, utility…), read from /proc (Linux)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents.setdefault(int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    ticks, totals, todo = os.sysconf("SC_CLK_TCK"), {}, [os.getpid()]
    while todo:
        for pid in parents.get(todo.pop(), []):
            todo.append(pid)
            try:  # Chromium rewrites its command line: arguments separated by spaces, not NULs
                args = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").split()
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if args and "chrom" in Path(args[0]).name:
                kind = next((a.split("=", 1)[1] for a in args if a.startswith("--type=")), "browser")
                totals[kind] = totals.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pan-seconds", type=float, default=5.0)
    parser.add_argument("--fps-runs", type=int, default=3)
    parser.add_argument("--fps-sizes", default="1280x800,1920x1080", help="viewports of the frame rate (comma-separated)")
    parser.add_argument("--fps-modes", default=",".join(FRAME_MODES),
                        help="rows of the frame rate (comma-separated): " + ", ".join(FRAME_MODES))
    parser.add_argument("--only", default="map,phone,cockpit,fps", help="what to measure (comma-separated)")
    parser.add_argument("--profile", action="store_true", help="print every request of one cold load of each page")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from cityops.app import create_app
    from cityops.core.db import make_engine, make_sessionmaker
    from cityops.core.settings import Settings
    from tests.conftest import serve_in_thread

    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="cityops-web-bench-"))
        data_dir = tmp
    try:
        build(data_dir)
        settings = Settings(data_dir=data_dir, log_json=False, log_level="WARNING")
        app = create_app(settings)
        with serve_in_thread(app, "uvicorn-web-bench") as base:
            # (Timeouts for a busy machine: a login's password hash alone can take seconds there.)
            admin = {"Authorization": "Bearer " + httpx.post(f"{base}/api/auth/login", json={"username": "admin",
                                                             "password": PASSWORD}, timeout=60).json()["access_token"]}
            place = httpx.get(f"{base}/api/places", params={"q": "老沟湾"}, headers=admin, timeout=60).json()[0]
            engine = make_engine(settings)
            if not httpx.get(f"{base}/api/incidents", params={"status": "active"}, headers=admin).json():
                start_incident(make_sessionmaker(engine), place)
            engine.dispose()
            only = set(args.only.split(","))
            # The cockpit's indicators: computed now when the district has none yet.
            board = httpx.get(f"{base}/api/indicators/board", headers=admin, timeout=60).json() if "cockpit" in only else None
            if board and not any(c["value"] is not None for sec in board["sectors"] for r in sec["runways"] for c in r["cards"]):
                httpx.post(f"{base}/api/indicators/compute", headers=admin, json={}, timeout=600).raise_for_status()
            # A grid worker of 老沟湾 with its households (the phone page's real content).
            httpx.post(f"{base}/api/users", headers=admin, json={"username": "bench_worker", "password": PASSWORD,
                       "role": "grid_worker", "scope_units": [place["unit_code"]]})
            rows = []
            load_before = os.getloadavg()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                wall = {"width": 1920, "height": 1080}
                pages = [("operations map", "/", "district", {"width": 1440, "height": 900}, 2.0, FAST_3G, "map"),
                         ("phone command room", f"/phone?lon={place['lon']}&lat={place['lat']}", "bench_worker",
                          {"width": 390, "height": 844}, 1.5, FAST_3G, "phone"),
                         # The cockpit beside its peer, the operations map, both unthrottled on the big screen.
                         ("cockpit, 1920×1080", "/cockpit", "leader", wall, 2.0, None, "cockpit"),
                         ("operations map (peer), 1920×1080", "/", "leader", wall, 2.0, None, "cockpit")]
                for label, path, user, viewport, target, network, key in pages:
                    if key not in only:
                        continue
                    if network:
                        # One profiled cold load: what goes over the wire, and the floor it sets on this link.
                        _, _, prof = first_paint(browser, base, path, user, viewport, "cold", network, profile=True)
                        wire = sum(r[2] for r in prof["requests"] if r[2] > 0)
                        floor = 2 * network["latency"] / 1000 + wire / network["downloadThroughput"]
                        rows.append((f"{label}: cold load, {len(prof['requests'])} requests, {wire / 1000:.0f} kB on the wire",
                                     f"{floor:.2f} s", "", "floor", "2 round trips + bytes at 1.44 Mb/s"))
                        if args.profile:
                            print(f"\n{label}, cold, every request (start s, end s, bytes, encoding, type, path):")
                            for r in prof["requests"]:
                                print(f"  {r[0]:6.2f} {r[1]:6.2f} {r[2]:>9} {r[3]:>5} {r[4]:>10} {r[5][:100]}")
                    for visit in ("cold", "warm", "sw") if network else ("cold", "warm"):
                        results = [first_paint(browser, base, path, user, viewport, visit, network) for _ in range(args.runs)]
                        values = [r[0] for r in results]
                        if network:
                            api_min, fastest = min((r[2]["api_min_ms"], r[2]["api_fastest"]) for r in results)
                            assert api_min >= network["latency"] * 0.95, f"an API answer in {api_min:.0f} ms: not throttled: {fastest}"
                        med = statistics.median(values)
                        rows.append((f"first meaningful paint, {label}, {'Fast 3G' if network else 'unthrottled'}, "
                                     f"{VISITS[visit]}", f"{med:.2f} s", f"< {target} s", "ok" if med < target else "FAIL",
                                     " ".join(f"{v:.2f}" for v in values)))
                        for part, what in (("overview", "the server's drawing of the first view shown"),
                                           ("interactive", "map interactive: MapLibre drew the base map and the live layers"),
                                           ("base", "MapLibre drew the base map"),
                                           ("first_view", "the server's households list shown"),
                                           ("app_list", "the app's households list rendered")):
                            got = [r[1][part] for r in results]
                            if any(v is None for v in got):
                                continue
                            rows.append((f"  {what} ({VISITS[visit]})", f"{statistics.median(got):.2f} s", "", "",
                                         " ".join(f"{v:.2f}" for v in got)))
                if "fps" in only:
                    sizes = [dict(zip(("width", "height"), map(int, size.split("x")))) for size in args.fps_sizes.split(",")]
                    for viewport in sizes:
                        for mode in [m for m in args.fps_modes.split(",") if m]:
                            values, costs = [], []
                            for _ in range(args.fps_runs):
                                fps, shown, cpu = frame_rate(browser, base, viewport, (place["lon"], place["lat"]),
                                                             args.pan_seconds, mode)
                                values.append(fps)
                                costs.append(cpu)
                            med = statistics.median(values)
                            what = shown if mode in ("all", "all-vector") else (f"{shown}, full resolution while moving"
                                                                 if mode == "all-full" else FRAME_MODES[mode])
                            gpu = statistics.median(c["gpu-process"] for c in costs)
                            renderer = statistics.median(c["renderer"] for c in costs)
                            rows.append((f"map panning, {viewport['width']}×{viewport['height']}, {what}, SwiftShader",
                                         f"{med:.1f} fps", "> 30 fps" if mode.startswith("all") else "",
                                         ("ok" if med > 30 else "FAIL") if mode.startswith("all") else "",
                                         " ".join(f"{v:.1f}" for v in values)
                                         + f"; CPU per frame: GPU process {gpu:.0f} ms, page {renderer:.0f} ms"))
                browser.close()
        width = max(len(r[0]) for r in rows)
        print(f"\n{'measure'.ljust(width)}  {'median':>10}  {'target':>9}  result  runs")
        for r in rows:
            print(f"{r[0].ljust(width)}  {r[1]:>10}  {r[2]:>9}  {r[3]:>6}  {r[4]}")
        print(f"load average: {' '.join(f'{x:.2f}' for x in load_before)} at the start, "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end; cores: {os.cpu_count()}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
