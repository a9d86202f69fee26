"""Indicators on the demo district, both backends: every value stored, roll-ups that agree at every level, values
equal to the facts they count, the cockpit's board and scope."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from cityops.events.models import Case
from cityops.identity.scope import Scope
from cityops.indicators import catalogue as catalogues
from cityops.indicators import service
from cityops.indicators.compute import compute, period_bounds
from cityops.indicators.models import Change, Value
from cityops.org.models import Unit


@pytest.fixture(scope="module")
def computed(demo_store):
    cat = catalogues.load()
    with demo_store.sessions() as session:
        results = service.run_all(session, cat, act=False)
        session.commit()
    return cat, results


def test_every_period_in_use_is_computed_and_stored(demo_store, computed):
    cat, results = computed
    assert {r.period for r in results} == {i.stored_period for i in cat.indicators.values()}
    with demo_store.sessions() as session:
        stored = set(session.scalars(select(Value.indicator_code).distinct()))
    metric_codes = {c for c, i in cat.indicators.items() if i.source.kind != "reported"}
    # A count of nothing is 0, stored; only a rate over nothing (or a reading never made) has no value.
    assert {"cases_open", "cases_reported", "houses_grade_d", "alarms_open", "risk_points_warned"} <= stored
    assert stored <= set(cat.indicators) and stored & metric_codes


def test_sums_and_ratios_agree_at_every_level(demo_store, computed):
    cat, _ = computed
    with demo_store.sessions() as session:
        units = {u.code: u for u in session.scalars(select(Unit))}
        rows = session.scalars(select(Value)).all()
    by = {(r.indicator_code, r.unit_code, r.period, r.period_start): r for r in rows}
    checked = 0
    for r in rows:
        ind = cat.indicators[r.indicator_code]
        kids = [by.get((r.indicator_code, c, r.period, r.period_start)) for c, u in units.items() if u.parent_code == r.unit_code]
        kids = [k for k in kids if k is not None]
        # Records held by a township itself (a rain gauge of the town) count for it and not for any village: the
        # exact agreement is the district's with its townships'.
        if not kids or ind.rollup not in ("sum", "ratio") or units[r.unit_code].level != "district":
            continue
        if ind.rollup == "sum":
            assert r.value == pytest.approx(sum(k.value for k in kids)), (r.indicator_code, r.unit_code)
        else:
            num, den = sum(k.numerator for k in kids), sum(k.denominator for k in kids)
            assert (r.numerator, r.denominator) == (pytest.approx(num), pytest.approx(den)), (r.indicator_code, r.unit_code)
            assert r.value == pytest.approx(num / den * ind.scale)
        checked += 1
    assert checked >= 15


def test_open_cases_equal_the_cases_open_now(demo_store, computed):
    with demo_store.sessions() as session:
        district = session.scalar(select(Unit).where(Unit.level == "district"))
        start, _ = period_bounds("day", datetime.now(UTC))
        value = session.scalar(select(Value.value).where(Value.indicator_code == "cases_open", Value.unit_code == district.code,
                                                         Value.period == "day", Value.period_start == start))
        open_now = session.scalar(select(func.count()).select_from(Case).where(
            Case.closed_at.is_(None), Case.voided_at.is_(None), Case.merged_into.is_(None)))
    assert open_now > 0 and value == open_now


def test_rerun_writes_nothing_new(demo_store, computed):
    cat, _ = computed
    with demo_store.sessions() as session:
        again = service.run(session, cat, "month", act=False)
        session.rollback()
    assert again.inserted == 0 and again.updated == 0


def test_board_for_the_district_and_a_township(api, computed):
    admin = api.login("admin")
    r = api.get("/api/indicators/board", headers=admin)
    assert r.status_code == 200, r.text
    board = r.json()
    assert board["unit"]["level"] == "district" and board["unit"]["read_only"] is False
    assert [s["name_zh"] for s in board["sectors"]][:3] == ["党建统领", "经济发展", "设施运行"]
    cards = [c for s in board["sectors"] for rw in s["runways"] for c in rw["cards"]]
    assert {c["indicator"] for c in cards} >= {"cases_open", "houses_grade_d", "risk_points_warned"}
    open_card = next(c for c in cards if c["indicator"] == "cases_open")
    assert open_card["value"] is not None and open_card["band"] in ("green", "yellow", "orange", "red")
    assert all(c["band"] in ("red", "orange") for c in board["red_list"])
    assert all(c["band"] in (None, "green", "yellow", "orange", "red") and c["red"] >= 0 for c in board["children"])
    township = board["children"][0]["code"]
    r = api.get("/api/indicators/board", params={"unit": township}, headers=admin)
    assert r.status_code == 200 and r.json()["unit"]["level"] == "township"
    # The first screen needs no other answer: the breadcrumb (names, top first) and the box the map fits.
    unit = r.json()["unit"]
    assert [c["code"] for c in unit["chain"]][-2:] == [board["unit"]["code"], township]
    assert unit["chain"][-1]["name"] == board["children"][0]["name"] and unit["chain"][-2]["level"] == "district"
    west, south, east, north = unit["bbox"]
    district_box = board["unit"]["bbox"]
    assert district_box[0] <= west < east <= district_box[2] and district_box[1] <= south < north <= district_box[3]
    # Drill-down values agree: the children of the district add up to its open cases.
    kids = api.get("/api/indicators/cases_open/children", headers=admin).json()["items"]
    assert sum(k["value"] for k in kids) == open_card["value"]


def test_reported_values_by_api_and_file_are_audited_and_counted(api, computed):
    admin = api.login("admin")
    townships = api.get("/api/units", params={"level": "township"}, headers=admin).json()["items"]
    t1, t2 = townships[0]["code"], townships[1]["code"]
    day = datetime.now(UTC).date().isoformat()
    r = api.post("/api/indicators/reports", headers=admin, json={"entries": [
        {"indicator": "party_members_in_grids", "unit_code": t1, "period": day, "value": 41}]})
    assert r.status_code == 200, r.text
    csv = f"indicator,unit_code,period,value,note\nparty_members_in_grids,{t2},{day},9,补报\n".encode()
    r = api.post("/api/indicators/reports/upload", headers=admin, files={"file": ("r.csv", csv)})
    assert r.status_code == 200 and r.json()["items"][0]["channel"] == "csv", r.text
    values = {v["unit_code"]: v["value"] for v in api.get("/api/indicators/party_members_in_grids/children", headers=admin).json()["items"]}
    assert values[t1] == 41 and values[t2] == 9
    district = api.get("/api/indicators/values", headers=admin).json()
    total = next(i for i in district["items"] if i["indicator"] == "party_members_in_grids")
    assert total["value"] == sum(values.values())
    audit = api.get("/api/audit", params={"entity": "indicator_report"}, headers=admin).json()
    assert audit["items"] if isinstance(audit, dict) else audit
    # Bad rows: nothing stored, every problem named.
    before = api.get("/api/indicators/party_members_in_grids/children", headers=admin).json()["items"]
    r = api.post("/api/indicators/reports", headers=admin, json={"entries": [
        {"indicator": "party_members_in_grids", "unit_code": t1, "period": day, "value": 1},
        {"indicator": "cases_open", "unit_code": t1, "period": day, "value": 1},
        {"indicator": "party_members_in_grids", "unit_code": t1, "period": "someday", "value": 1}]})
    assert r.status_code == 422 and len(r.json()["details"]["problems"]) == 2, r.text
    assert api.get("/api/indicators/party_members_in_grids/children", headers=admin).json()["items"] == before
    r = api.post("/api/indicators/reports/upload", headers=admin, files={"file": ("r.txt", b"x")})
    assert r.status_code == 422


def test_scorecard_ranking_and_report_exports(api, computed):
    admin = api.login("admin")
    r = api.get("/api/indicators/scorecards/event_center", headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["of"] == len(body["items"]) >= 2
    assert [i["rank"] for i in body["items"]] == list(range(1, len(body["items"]) + 1))
    assert all(0 <= i["score"] <= 100 for i in body["items"])
    assert api.get("/api/indicators/scorecards/nothing", headers=admin).status_code == 404
    x = api.get("/api/indicators/report", params={"format": "xlsx"}, headers=admin)
    assert x.status_code == 200 and x.content[:2] == b"PK"
    from openpyxl import load_workbook
    import io
    book = load_workbook(io.BytesIO(x.content))
    assert book.worksheets[0]["A2"].value == "板块" and len(book.worksheets) == 1 + len(api.get(
        "/api/indicators/scorecards", headers=admin).json()["items"])
    p = api.get("/api/indicators/report", params={"format": "pdf"}, headers=admin)
    assert p.status_code == 200 and p.content[:5] == b"%PDF-"


def test_the_iso_pack_computes_on_the_same_data(demo_store, computed):
    """ISO 37120/37122/37123 as a second catalogue in the same format: its platform metrics compute on the demo."""
    iso = catalogues.load(pack=catalogues.pack_path("iso37120"))
    assert {s.code for s in iso.sectors.values()} == {"ISO37120", "ISO37122", "ISO37123"}
    cat, _ = computed
    with demo_store.sessions() as session:
        district = session.scalar(select(Unit).where(Unit.level == "district"))
        c = compute(session, iso, "day", datetime.now(UTC))
        mine = c.values["iso37123_unsafe_housing"][c.tree.index[district.code]]
        theirs = compute(session, cat, "day", datetime.now(UTC), codes={"residents_grade_d"})
        assert mine == theirs.values["residents_grade_d"][theirs.tree.index[district.code]]
        assert c.values["iso37122_sensors_online"][c.tree.index[district.code]] >= 0


def test_stream_brings_a_new_case_to_the_open_cases_live(api, computed):
    """A case reported after the stream began reaches the listener as a change of cases_open (the live refresh)."""
    import json as _json

    from shapely.geometry import shape

    admin = api.login("admin")
    r = api.get("/api/indicators/stream", headers=admin, params={"timeout": 0})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    with api.store.sessions() as session:
        last = service.last_change_id(session)
    before = next(i["value"] for i in api.get("/api/indicators/values", headers=admin).json()["items"] if i["indicator"] == "cases_open")
    grid = api.get("/api/units", params={"level": "grid", "limit": 1}, headers=admin).json()["items"][0]["code"]
    p = shape(api.get(f"/api/units/{grid}", params={"geometry": True}, headers=admin).json()["geometry"]).representative_point()
    r = api.post("/api/events/cases", headers=admin, json={"class_code": "06010", "lon": p.x, "lat": p.y, "description": "驾驶舱测试"})
    assert r.status_code == 201, r.text
    r = api.get("/api/indicators/stream", headers={**admin, "Last-Event-ID": str(last)}, params={"timeout": 2.5})
    events = [_json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    district = [e for e in events if e["indicator"] == "cases_open" and len(e["unit_code"]) == 6]
    # The demo keeps reporting cases as time passes, so the district may have moved by more than ours.
    assert district and district[-1]["value"] >= before + 1, r.text[:500]
    grid_event = [e for e in events if e["indicator"] == "cases_open" and e["unit_code"] == grid]
    assert grid_event and grid_event[-1]["value"] >= 1, "the grid's own value moved too"


def test_bands_matrix_is_bands_of_for_every_indicator():
    """The one-pass bands of many indicators agree with the per-indicator rule (both directions, thresholds missing,
    values on a threshold, no value)."""
    import numpy as np

    from cityops.indicators.catalogue import Bands, Indicator, Source
    from cityops.indicators.compute import bands_matrix, bands_of

    def ind(code, direction, **bands):
        return Indicator(code=code, subrunway="s", name_zh="指标", name_en="x", unit="个", direction=direction,
                         period="daily", bands=Bands(**bands), levels=["district"], rollup="sum", owner="o",
                         source=Source(kind="reported"))

    inds = [ind("a", "lower", yellow=1, orange=2, red=3), ind("b", "higher", yellow=90, orange=80, red=70),
            ind("c", "lower", red=5), ind("d", "higher", red=10), ind("e", "lower", yellow=0.5, red=2)]
    rng = np.random.default_rng(3)
    v = rng.choice([np.nan, 0, 1, 2, 3, 4, 5, 70, 75, 80, 85, 90, 95, 0.5], size=(len(inds), 200))
    got = bands_matrix(inds, v)
    for k, i in enumerate(inds):
        assert got[k].tolist() == bands_of(i, v[k]).tolist(), i.code
    assert set(got[0][np.isnan(v[0])]) == {-1}


def test_a_new_case_is_pushed_to_an_open_stream_at_once(api, computed):
    """The live indicators recompute when a case is committed, not on a timer: with the periodic refresh an hour
    away, a case created while a stream is open still reaches it in about a second (the event center's outbox is
    the mark; alarms and warning levels poke it through the bus)."""
    from cityops.wiring import subscriptions

    live = api.app.state.indicators_live
    assert {s.consumer: s.names for s in subscriptions(indicators_live=live)}["indicators.live"] == \
        {"alarm.changed", "warning.level_changed", "unit.changed"}
    settings = live.settings
    live.settings = settings.model_copy(update={"indicators_live_seconds": 3600})
    try:
        _case_reaches_the_stream(api, live)
    finally:
        live.settings = settings


def test_a_fact_recomputes_only_the_live_indicators_it_moves():
    """A case, an alarm, a warning level each recompute the live indicators on the metrics they move; the sensor
    aggregates that change with every reading under ingest wait for the periodic refresh."""
    from cityops.indicators.live import moved_by

    cat = catalogues.load()
    assert moved_by(cat, {"case.changed"}) == {"cases_open", "cases_overdue", "waterlogging_cases"}
    assert moved_by(cat, {"alarm.changed"}) == {"alarms_open", "geohazard_alarms"}
    assert moved_by(cat, {"warning.level_changed"}) == {"risk_points_warned", "risk_points_red"}
    assert moved_by(cat, {"case.changed", "alarm.changed"}) == \
        {"cases_open", "cases_overdue", "waterlogging_cases", "alarms_open", "geohazard_alarms"}
    assert moved_by(cat, {"observation.batch_stored"}) == set()


def _case_reaches_the_stream(api, live):
    import json as _json
    import threading
    import time

    from shapely.geometry import shape

    admin = api.login("admin")
    grid = api.get("/api/units", params={"level": "grid", "limit": 1}, headers=admin).json()["items"][0]["code"]
    p = shape(api.get(f"/api/units/{grid}", params={"geometry": True}, headers=admin).json()["geometry"]).representative_point()
    got: list[tuple[float, dict]] = []

    def listen():
        with api.stream("GET", "/api/indicators/stream", headers=admin, params={"timeout": 20}) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    got.append((time.monotonic(), _json.loads(line[6:])))

    runs = live.runs
    t = threading.Thread(target=listen, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while live.runs == runs and time.monotonic() < deadline:  # the first watcher's own computation
        time.sleep(0.05)
    assert live.runs > runs
    time.sleep(0.5)
    seen = len(got)
    r = api.post("/api/events/cases", headers=admin, json={"class_code": "06010", "lon": p.x, "lat": p.y, "description": "推送测试"})
    assert r.status_code == 201, r.text
    created = time.monotonic()
    while time.monotonic() < created + 10 and not any(e["indicator"] == "cases_open" and e["unit_code"] == grid
                                                       for _, e in got[seen:]):
        time.sleep(0.05)
    arrived = [at for at, e in got[seen:] if e["indicator"] == "cases_open" and e["unit_code"] == grid]
    assert arrived, "the new case never reached the stream"
    assert arrived[0] - created < 5, arrived[0] - created  # not the hour of the periodic refresh
    t.join(30)


def test_a_burst_of_changes_reaches_an_open_stream_whole_and_at_once(api, computed, monkeypatch):
    """A new day stores every live value anew: one recomputation writes thousands of changes. An open stream sends
    them all at once, page after page, not one page each time the live indicators wake it (a cockpit stayed tens of
    seconds behind such a burst, and a case created meanwhile waited behind it)."""
    import json as _json
    import threading
    import time

    from sqlalchemy import delete

    from cityops.indicators import routes
    from cityops.indicators.models import Digest

    live = api.app.state.indicators_live
    settings = live.settings
    # No other wake: the periodic refreshes an hour away, and the streams' own re-read far beyond the deadline.
    live.settings = settings.model_copy(update={"indicators_live_seconds": 3600, "indicators_full_seconds": 3600})
    monkeypatch.setattr(routes, "STREAM_READ_SECONDS", 120.0)
    monkeypatch.setattr(service, "CHANGES_PAGE", 50)  # the test district's day is ~550 changes: pages of 50
    cat = service.load_catalogue(settings)
    codes = [c for c, i in cat.indicators.items() if i.period == "live"]
    start, _ = period_bounds("day", datetime.now(UTC))
    with api.store.sessions() as session:  # as at midnight: no value of the live indicators stored for the day yet
        for table in (Value, Digest):
            session.execute(delete(table).where(table.period == "day", table.period_start == start,
                                                table.indicator_code.in_(codes)))
        session.commit()
        before = service.last_change_id(session)
    admin = api.login("admin")
    got: list[int] = []

    def listen():
        with api.stream("GET", "/api/indicators/stream", headers=admin, params={"timeout": 60}) as r:
            for line in r.iter_lines():
                if line.startswith("id: "):
                    got.append(int(line[4:]))
                if stop.is_set():
                    return

    stop = threading.Event()
    runs = live.runs
    try:
        t = threading.Thread(target=listen, daemon=True)
        t.start()
        deadline = time.monotonic() + 60
        while live.runs == runs and time.monotonic() < deadline:  # the first watcher's computation: the whole day
            time.sleep(0.05)
        assert live.runs > runs
        with api.store.sessions() as session:
            written = list(session.scalars(select(Change.id).where(Change.id > before).order_by(Change.id)))
        assert len(written) > 5 * service.CHANGES_PAGE  # a burst of several pages
        deadline = time.monotonic() + 30  # a page per wake would not get past the first page in this time
        while time.monotonic() < deadline and not set(written) <= set(got):
            time.sleep(0.05)
        assert set(written) <= set(got), f"{len(set(written) - set(got))} of {len(written)} changes not sent"
        assert got == sorted(got)
    finally:
        stop.set()
        live.settings = settings


def test_an_open_stream_sends_the_current_periods_only(api, computed, monkeypatch):
    """Past days' values written while a cockpit is open (the demo's history after its server answers, a day
    recomputed) are not sent as live values: the stream sends each indicator's changes of its current period only.
    Pages of past changes only move the stream on (it does not stall on them, nor read them again), so the current
    changes stored after them arrive; and a stream resumed from before them (Last-Event-ID) sends the same."""
    import json as _json
    import threading
    import time
    from datetime import timedelta

    from sqlalchemy import delete

    from cityops.indicators.compute import PERIOD_KINDS
    from cityops.indicators.models import Digest

    cat, _ = computed
    monkeypatch.setattr(service, "CHANGES_PAGE", 50)  # the past days' changes fill many pages
    live = api.app.state.indicators_live
    admin = api.login("admin")
    now = datetime.now(UTC)
    current = {kind: period_bounds(kind, now)[0] for kind in PERIOD_KINDS}
    past = [now - timedelta(days=d) for d in (1, 2, 3)]

    def restore(session, at, codes=None):  # stored anew: the same values, each written again as a change
        start = period_bounds("day", at)[0]
        for table in (Value, Digest):
            session.execute(delete(table).where(table.period == "day", table.period_start == start,
                                                *([table.indicator_code.in_(codes)] if codes else [])))
        return service.run(session, cat, "day", at, codes=set(codes) if codes else None, act=False)

    got: list[tuple[int, dict]] = []
    stop = threading.Event()

    def listen():
        with api.stream("GET", "/api/indicators/stream", headers=admin, params={"timeout": 25}) as r:
            event_id = None
            for line in r.iter_lines():
                if line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("data: "):
                    got.append((event_id, _json.loads(line[6:])))
                if stop.is_set():
                    return

    runs = live.runs
    t = threading.Thread(target=listen, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while live.runs == runs and time.monotonic() < deadline:  # the stream is open: its watcher's computation
            time.sleep(0.05)
        assert live.runs > runs
        with api.store.sessions() as session:
            before = service.last_change_id(session)
            for at in past:
                assert restore(session, at).inserted
            session.commit()
            middle = service.last_change_id(session)
            assert middle - before > 5 * service.CHANGES_PAGE  # past changes only, page after page
            assert restore(session, now, ["cases_open", "alarms_open"]).inserted
            session.commit()
            written = list(session.execute(select(Change.id, Change.period, Change.period_start)
                                           .where(Change.id > before).order_by(Change.id)))
        mine = {i for i, period, start in written if i > middle}
        assert mine and all(start == current[period] for i, period, start in written if i > middle)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not mine <= {i for i, _ in got}:
            time.sleep(0.05)
        assert mine <= {i for i, _ in got}, "the current changes after the past ones never arrived"
        stale = [e for _, e in got if datetime.fromisoformat(e["period_start"]) != current[e["period"]]]
        assert not stale, f"{len(stale)} changes of past periods sent, e.g. {stale[0]}"
    finally:
        stop.set()
        t.join(40)
    # Resumed from before the past days' changes: the same current changes, nothing of the past.
    r = api.get("/api/indicators/stream", headers={**admin, "Last-Event-ID": str(before)}, params={"timeout": 3})
    ids = [int(line[4:]) for line in r.text.splitlines() if line.startswith("id: ")]
    events = [_json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert mine <= set(ids) and all(datetime.fromisoformat(e["period_start"]) == current[e["period"]] for e in events)


def test_changes_are_numbered_in_commit_order(demo_store, computed):
    """Two recomputations storing changes at once (two worker processes): the one that commits first has the lower
    ids, so a stream that read the later ids has not passed over the earlier (it reads after the last id it sent)."""
    import threading

    from sqlalchemy import delete

    from cityops.indicators.models import Digest

    cat, _ = computed
    start, _ = period_bounds("day", datetime.now(UTC))

    def recompute(session, code):  # as a new day: the value stored anew, so the recomputation writes changes
        for table in (Value, Digest):
            session.execute(delete(table).where(table.period == "day", table.period_start == start,
                                                table.indicator_code == code))
        assert service.run(session, cat, "day", codes={code}, act=False).inserted

    with demo_store.sessions() as session:
        before = service.last_change_id(session)
    first = demo_store.sessions()
    recompute(first, "cases_open")  # its changes written, not committed yet
    done = threading.Event()

    def second():
        with demo_store.sessions() as session:
            recompute(session, "alarms_open")
            session.commit()
        done.set()

    t = threading.Thread(target=second, daemon=True)
    t.start()
    try:
        done.wait(5)  # the second commits now if nothing makes it wait for the first
        with demo_store.sessions() as session:
            seen = [c.id for c in service.changes_after(session, Scope(all_units=True), before, limit=100_000)]
        first.commit()
    finally:
        first.close()
    t.join(60)
    assert done.is_set()
    since = max(seen, default=before)
    with demo_store.sessions() as session:
        later = [c.id for c in service.changes_after(session, Scope(all_units=True), since, limit=100_000)]
        written = set(session.scalars(select(Change.id).where(Change.id > before)))
    assert written and set(seen) | set(later) == written, "a change committed after a later id was read is never sent"


def test_the_demo_history_groups_the_buildings_once(demo_store, computed, monkeypatch):
    """The demo's 30-day history runs its periods with a registry whose as-they-stand metrics (the housing registry,
    not windowed) answer each parameter set once: the same values as the platform's registry, one grouping of the
    buildings for every period instead of one per period."""
    from dataclasses import replace

    from cityops.indicators import demo as indicators_demo
    from cityops.indicators.metrics import Registry, registry

    cat, _ = computed
    calls = []
    platform = registry()

    def counted(metric):
        def compute_counted(session, window, param_sets):
            calls.append(metric.name)
            return metric.compute(session, window, param_sets)
        return replace(metric, compute=compute_counted)

    monkeypatch.setattr(indicators_demo, "registry",
                        lambda: Registry([counted(m) if m.name in indicators_demo.AS_THEY_STAND else m
                                          for m in platform.metrics.values()]))
    history = indicators_demo._history_registry()
    days = [datetime(2026, 7, 20, 12, tzinfo=UTC), datetime(2026, 7, 21, 12, tzinfo=UTC)]
    with demo_store.sessions() as session:
        for at in days:
            service.run(session, cat, "day", at, act=False, metrics=history)
        assert calls == ["housing.buildings"]
        for at in days:
            fresh = compute(session, cat, "day", at)
            stored = dict(session.execute(select(Value.unit_code, Value.value).where(
                Value.indicator_code == "houses_grade_d", Value.period == "day",
                Value.period_start == period_bounds("day", at)[0])).all())
            district = fresh.tree.codes[fresh.tree.by_level["district"][0]]
            assert stored[district] == fresh.values["houses_grade_d"][fresh.tree.index[district]] > 0
        session.rollback()


def test_the_demo_history_is_written_after_start_and_completed_after_a_restart(store, monkeypatch):
    """``cityops demo`` serves before the indicators' 30-day history is written: build_demo hands it back as a
    deferred step (the cockpit has today's values, its trend one day). Written one committed day at a time, a
    process stopped mid-way leaves whole days; the next start finds the history unfinished and writes the days still
    missing, none twice: one change per value, the values those a straight computation stores."""
    from datetime import timedelta

    from cityops.demo.generator import DemoConfig, build_demo, unfinished
    from cityops.indicators import demo as indicators_demo
    from cityops.indicators.models import Digest

    deferred: list = []
    build_demo(store.sessions, store.org, DemoConfig(grids=40, village_scale=0.2, townships=("义和镇",)), deferred=deferred)
    assert [name for name, _ in deferred] == ["building_tiles", "indicators_history"]
    cat = catalogues.load()
    now = datetime.now(UTC)
    today = period_bounds("day", now)[0]

    def days() -> list[datetime]:
        with store.sessions() as session:
            return sorted(session.scalars(select(Value.period_start).where(Value.period == "day").distinct()))

    def trend() -> int:
        with store.sessions() as session:
            district = session.scalar(select(Unit).where(Unit.level == "district"))
            b = service.board(session, cat, Scope(all_units=True), district, datetime.now(UTC))
            return max(len(c["trend"]) for s in b["sectors"] for r in s["runways"] for c in r["cards"])

    assert days() == [today] and trend() == 1  # served with today's values; the history comes after
    assert [name for name, _ in unfinished(store.sessions)] == ["indicators_history"]

    # The process stops while writing the 4th day: that day's rows were written, not committed.
    real, calls = service.run, []

    def stopping(*args, **kwargs):
        calls.append(1)
        result = real(*args, **kwargs)
        if len(calls) == 4:
            raise KeyboardInterrupt("stopped")
        return result

    monkeypatch.setattr(service, "run", stopping)
    with pytest.raises(KeyboardInterrupt):
        dict(deferred)["indicators_history"]()
    monkeypatch.setattr(service, "run", real)
    assert len(days()) == 1 + 3 and 1 < trend() <= 4

    # The next start: the history is unfinished, and completing it writes the 27 days left.
    resumed = unfinished(store.sessions)
    assert [name for name, _ in resumed] == ["indicators_history"]
    resumed[0][1]()
    assert unfinished(store.sessions) == [] and indicators_demo.pending_history(store.sessions) is None
    stored = days()
    assert stored == [today - timedelta(days=d) for d in range(indicators_demo.HISTORY_DAYS, -1, -1)]
    assert trend() >= indicators_demo.HISTORY_DAYS  # the board's 30 days back from now
    with store.sessions() as session:
        history = (Value.period == "day", Value.period_start < today)
        values = session.scalar(select(func.count()).select_from(Value).where(*history, Value.value.is_not(None)))
        changes = session.scalar(select(func.count()).select_from(Change).where(Change.period == "day",
                                                                                 Change.period_start < today))
        assert values and changes == values  # each value stored once
        digests = session.scalar(select(func.count()).select_from(Digest).where(Digest.period == "day",
                                                                                 Digest.period_start < today))
        per_day = session.scalar(select(func.count()).select_from(Digest).where(Digest.period == "day",
                                                                                 Digest.period_start == today))
        assert digests == indicators_demo.HISTORY_DAYS * per_day
        for at in (now - timedelta(days=29), now - timedelta(days=4)):  # one day written before the stop, one after
            again = real(session, cat, "day", at, act=False)
            assert again.inserted == again.updated == 0, at
        session.rollback()
