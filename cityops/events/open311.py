"""Open311 GeoReport v2 at /open311/v2 (standards.md section 7): discovery, services, service definitions,
create/list/get requests, tokens; JSON and XML by suffix; the standard error format; string service codes.

Matters keep their 5-digit code as service_code ("06010"); components are prefixed "C" ("C01001") because
the same digits exist in both kinds. ``jurisdiction_id`` is the district code or its domain. Creating a
request needs ``api_key``: a CityOps API key whose user holds ``events.report`` and whose scope covers the
location.

Reading (lists and single requests) needs no key, and then shows only what is meant for the public
(``queries.public_clause``): requests citizens made through a public channel, of classes marked public in the
taxonomy — not patrol reports, 12345 calls, sensor alarms or tasks. With an ``api_key`` (or a bearer token)
of a user holding ``events.read`` a caller sees that too and the cases of its own scope. A request outside
what the caller sees is "not found", like one that does not exist. No response carries the reporter's
personal data or anyone's notes: ``status_notes`` is the workflow step (``workflow.PUBLIC_STEP``).
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import or_, select

from cityops.core.errors import Busy, CityOpsError, Forbidden, InvalidInput, NotFound, OutsideJurisdiction, Unauthenticated
from cityops.core.web import DB, AppContext, Ctx, bearer_token
from cityops.events import actions, catalogue, creation, intake, queries, routing
from cityops.events.models import Case
from cityops.events.workflow import PUBLIC_STEP

router = APIRouter(prefix="/open311/v2", tags=["open311"])
SPEC = "http://wiki.open311.org/GeoReport_v2"
DISTRICT = "500154"
DOMAINS = {"500154", "kaizhou.cityops.cn"}
MAX_LIST = 1000


class Open311Error(Exception):
    def __init__(self, status: int, code: str, description: str):
        self.status, self.code, self.description = status, code, description


def _fmt(fmt: str) -> str:
    if fmt not in ("json", "xml"):
        raise Open311Error(404, "404", f"unknown format {fmt!r}; use .json or .xml")
    return fmt


def _xml(root: str, item: str, rows: list[dict]) -> bytes:
    top = ET.Element(root)
    for row in rows:
        el = ET.SubElement(top, item)
        for k, v in row.items():
            _xml_value(el, k, v)
    return b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(top, encoding="utf-8")


def _xml_value(parent, key, value):
    if isinstance(value, list):
        holder = ET.SubElement(parent, key)
        singular = {"attributes": "attribute", "values": "value", "endpoints": "endpoint", "formats": "format"}.get(key, "item")
        for v in value:
            if isinstance(v, dict):
                child = ET.SubElement(holder, singular)
                for k2, v2 in v.items():
                    _xml_value(child, k2, v2)
            else:
                ET.SubElement(holder, singular).text = str(v)
    elif isinstance(value, dict):
        holder = ET.SubElement(parent, key)
        for k2, v2 in value.items():
            _xml_value(holder, k2, v2)
    else:
        ET.SubElement(parent, key).text = "" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))


def _answer(fmt: str, root: str, item: str, rows, status: int = 200) -> Response:
    if fmt == "xml":
        return Response(_xml(root, item, rows), status_code=status, media_type="text/xml; charset=utf-8")
    import json

    return Response(json.dumps(rows, ensure_ascii=False), status_code=status, media_type="application/json; charset=utf-8")


def error_response(fmt: str, status: int, errors: list[tuple[str, str]]) -> Response:
    rows = [{"code": c, "description": d} for c, d in errors]
    return _answer(fmt if fmt in ("json", "xml") else "xml", "errors", "error", rows, status)


async def _form(request: Request, ctx: AppContext) -> dict:
    """The form-encoded body. The request body limit (``max_upload_bytes``, enforced as the body arrives) is the one
    size gate: the form parser's own per-field cap (1 MiB by default) would otherwise answer a long field with a 400
    before the limit's 413."""
    if "form" not in (request.headers.get("content-type") or ""):
        return {}
    return dict(await request.form(max_part_size=2 * ctx.settings.max_upload_bytes))


def _jurisdiction(request: Request, form: dict | None = None) -> None:
    value = (form or {}).get("jurisdiction_id") or request.query_params.get("jurisdiction_id")
    if value and value not in DOMAINS:
        raise Open311Error(404, "404", f"jurisdiction_id {value!r} not found; this endpoint serves {DISTRICT}")


def _service_code(cls: catalogue.CaseClass) -> str:
    return cls.code if cls.kind == "matter" else "C" + cls.code


def _class_for(code: str) -> catalogue.CaseClass:
    code = (code or "").strip()
    kind = None
    if code[:1].upper() == "C":
        kind, code = "component", code[1:]
    elif code:
        kind = "matter"
    try:
        cls = catalogue.taxonomy().resolve(code, kind)
    except InvalidInput:
        raise Open311Error(404, "404", f"service_code {code!r} not found") from None
    return cls


def _service(cls: catalogue.CaseClass) -> dict:
    return {"service_code": _service_code(cls), "service_name": cls.name,
            "description": f"{cls.filing}（处置时限 {cls.limits['normal']}）", "metadata": True, "type": "realtime",
            "keywords": ",".join(cls.keywords), "group": cls.major_name}


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(catalogue.calendar().tz).isoformat(timespec="seconds") if dt else None


def _request(case: Case) -> dict:
    cls = catalogue.taxonomy().classes.get((case.kind, case.class_code))
    closed = case.state in ("closed", "void")
    agency = (case.route or {}).get("department_name") or case.department_code or case.assigned_unit_code or ""
    return {"service_request_id": case.number, "status": "closed" if closed else "open",
            "status_notes": PUBLIC_STEP.get(case.state, ""), "service_name": cls.name if cls else "",
            "service_code": _service_code(cls) if cls else case.class_code, "description": case.description or "",
            "agency_responsible": agency, "service_notice": "", "requested_datetime": _iso(case.reported_at),
            "updated_datetime": _iso(case.closed_at or case.voided_at or case.updated_at),
            "expected_datetime": _iso(case.deadline_at), "address": case.address or "", "address_id": "",
            "zipcode": "", "lat": case.lat, "long": case.lon, "media_url": (case.attributes or {}).get("media_url", "")}


#: The longest media_url taken (browsers' practical limit for a URL).
MAX_MEDIA_URL = 2048


def _media_url(value: str | None) -> str | None:
    """The request's photo (GeoReport v2 ``media_url``): an absolute http(s) URL, given back as sent on every read."""
    if not value:
        return None
    url = urlsplit(value)
    if (len(value) > MAX_MEDIA_URL or url.scheme.lower() not in ("http", "https") or not url.netloc
            or any(c.isspace() or ord(c) < 32 for c in value)):
        raise Open311Error(400, "400", f"media_url must be an absolute http(s) URL of at most {MAX_MEDIA_URL} characters")
    return value


def _handle(fmt: str, fn):
    try:
        return fn(_fmt(fmt))
    except Open311Error as exc:
        return error_response(fmt, exc.status, [(exc.code, exc.description)])
    except (Unauthenticated, Forbidden) as exc:
        return error_response(fmt, 403, [("403", exc.message)])
    except NotFound as exc:
        return error_response(fmt, 404, [("404", exc.message)])
    except OutsideJurisdiction as exc:
        return error_response(fmt, 400, [("outside_jurisdiction", exc.message)])
    except Busy as exc:
        response = error_response(fmt, 503, [(exc.code, exc.message)])
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except CityOpsError as exc:
        return error_response(fmt, exc.status_code if exc.status_code in (409, 413) else 400, [(exc.code, exc.message)])


@router.get("/discovery.{fmt}", include_in_schema=True, summary="Open311 service discovery")
def discovery(fmt: str, request: Request):
    base = str(request.base_url).rstrip("/") + "/open311/v2"

    def run(fmt):
        body = {"changeset": "2026-11-01T00:00:00+08:00", "contact": "开州区城市运行和治理中心 12345",
                "key_service": "向区城市运行和治理中心申请 API key",
                "endpoints": [{"specification": SPEC, "url": base, "changeset": "2026-11-01T00:00:00+08:00",
                               "type": "production", "formats": ["text/xml", "application/json"]}]}
        if fmt == "xml":
            return Response(b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(_discovery_xml(body), encoding="utf-8"),
                            media_type="text/xml; charset=utf-8")
        return _answer("json", "", "", body)

    return _handle(fmt, run)


def _discovery_xml(body: dict):
    root = ET.Element("discovery")
    for k, v in body.items():
        _xml_value(root, k, v)
    return root


@router.get("/services.{fmt}", summary="Open311 service list")
def services(fmt: str, request: Request):
    def run(fmt):
        _jurisdiction(request)
        return _answer(fmt, "services", "service", [_service(c) for c in catalogue.taxonomy().classes.values()])

    return _handle(fmt, run)


@router.get("/services/{code}.{fmt}", summary="Open311 service definition")
def service_definition(code: str, fmt: str, request: Request):
    def run(fmt):
        _jurisdiction(request)
        cls = _class_for(code)
        body = {"service_code": _service_code(cls), "attributes": [
            {"variable": True, "code": "urgency", "datatype": "singlevaluelist", "required": False,
             "datatype_description": "紧急程度", "order": 1, "description": "紧急程度 urgency",
             "values": [{"key": u, "name": {"normal": "一般", "urgent": "紧急"}.get(u, u)} for u in catalogue.taxonomy().urgencies]}]}
        if fmt == "xml":
            root = ET.Element("service_definition")
            for k, v in body.items():
                _xml_value(root, k, v)
            return Response(b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(root, encoding="utf-8"),
                            media_type="text/xml; charset=utf-8")
        return _answer("json", "", "", body)

    return _handle(fmt, run)


@router.post("/requests.{fmt}", summary="Open311 create a service request (form-encoded, api_key required)")
async def create_request(fmt: str, request: Request, ctx: Ctx, session: DB):
    form = await _form(request, ctx)

    def run(fmt):
        from cityops.identity.service import resolve_token

        _jurisdiction(request, form)
        key = form.get("api_key") or request.query_params.get("api_key")
        if not key:
            raise Open311Error(403, "403", "api_key is required to create a request")
        try:
            principal = resolve_token(session, ctx.settings.resolved_secret, key)
        except CityOpsError:
            raise Open311Error(403, "403", "api_key is invalid") from None
        if not principal.role.allows("events.report"):
            raise Open311Error(403, "403", "this api_key may not create requests")
        if not form.get("service_code"):
            raise Open311Error(400, "400", "service_code is required")
        cls = _class_for(form["service_code"])
        lat, lon = form.get("lat") or None, form.get("long") or None
        if not ((lat and lon) or form.get("address_string") or form.get("address_id")):
            raise Open311Error(400, "400", "a location is required: lat and long, address_string or address_id")
        try:
            lat_f, lon_f = (float(lat), float(lon)) if lat and lon else (None, None)
        except ValueError:
            raise Open311Error(400, "400", "lat and long must be numbers") from None
        description = form.get("description") or None
        if description and "<" in description and ">" in description:
            raise Open311Error(400, "400", "description must not contain HTML")
        media_url = _media_url(form.get("media_url"))
        urgency = form.get("attribute[urgency]") or "normal"
        reporter = {k: form.get(k) for k in ("email", "first_name", "last_name", "phone", "device_id", "account_id") if form.get(k)}
        session.commit()  # the read transaction ends before the Locator snapshot (see routing.write_section)
        draft = creation.draft_case(session, source="open311", class_code=cls.code, kind=cls.kind, description=description,
                                   lon=lon_f, lat=lat_f, address=form.get("address_string") or None,
                                   address_id=form.get("address_id") or None, urgency=urgency, reporter=reporter,
                                   attributes={"media_url": media_url} if media_url else {},
                                   actor=principal.actor(), scope=principal.scope, locator=routing.FixedLocator(ctx.locator))
        session.close()
        intake.writer(request.app.state).submit(draft).result()  # answered after the group commit
        # A new request has no deadline yet: it is set when the case is filed (立案).
        return _answer(fmt, "service_requests", "request",
                       [{"service_request_id": draft.values["number"], "service_notice": "已收到，立案后按处置时限办理"}])

    # In a worker thread: locating and the wait for the commit must not hold up the event loop.
    return await asyncio.to_thread(_handle, fmt, run)


def _visible(request: Request, ctx, session):
    """SQL filter of the requests the caller may read: the public ones, and with an ``api_key`` (or bearer
    token) of a user holding ``events.read`` also the cases of its scope. Bad credentials: 403."""
    from cityops.identity.service import resolve_token

    raw = request.query_params.get("api_key") or bearer_token(request)
    if not raw:
        return queries.public_clause()
    try:
        principal = resolve_token(session, ctx.settings.resolved_secret, raw)
    except CityOpsError:
        raise Open311Error(403, "403", "api_key is invalid") from None
    if not principal.role.allows("events.read"):
        return queries.public_clause()
    return or_(queries.public_clause(), queries.scope_clause(principal.scope))


@router.get("/requests.{fmt}", summary="Open311 list service requests (public ones; with api_key also your scope's)")
def list_requests(fmt: str, request: Request, ctx: Ctx, session: DB):
    p = request.query_params

    def run(fmt):
        _jurisdiction(request)
        stmt = select(Case).where(_visible(request, ctx, session))
        if p.get("service_request_id"):
            stmt = stmt.where(Case.number.in_([x.strip() for x in p["service_request_id"].split(",") if x.strip()]))
        else:
            try:
                end = datetime.fromisoformat(p["end_date"]) if p.get("end_date") else datetime.now(UTC)
                start = datetime.fromisoformat(p["start_date"]) if p.get("start_date") else end - timedelta(days=90)
            except ValueError:
                raise Open311Error(400, "400", "start_date/end_date must be W3C datetimes with a time zone") from None
            if start.tzinfo is None or end.tzinfo is None:
                raise Open311Error(400, "400", "start_date/end_date need a time zone")
            if end - start > timedelta(days=90) or end < start:
                raise Open311Error(400, "400", "the date span must be between 0 and 90 days")
            stmt = stmt.where(Case.reported_at >= start, Case.reported_at <= end)
            if p.get("service_code"):
                codes = [_class_for(c) for c in p["service_code"].split(",") if c.strip()]
                stmt = stmt.where(or_(*[(Case.kind == c.kind) & (Case.class_code == c.code) for c in codes]))
            status = [s for s in (p.get("status") or "").split(",") if s]
            if any(s not in ("open", "closed") for s in status):
                raise Open311Error(400, "400", "status must be open, closed or both")
            if status == ["open"]:
                stmt = stmt.where(Case.state.not_in(("closed", "void")))
            elif status == ["closed"]:
                stmt = stmt.where(Case.state.in_(("closed", "void")))
        rows = session.scalars(stmt.order_by(Case.reported_at.desc()).limit(MAX_LIST)).all()
        return _answer(fmt, "service_requests", "request", [_request(c) for c in rows])

    return _handle(fmt, run)


@router.get("/requests/{request_id}.{fmt}", summary="Open311 one service request (public, or in your scope with api_key)")
def get_request(request_id: str, fmt: str, request: Request, ctx: Ctx, session: DB):
    def run(fmt):
        _jurisdiction(request)
        case = session.scalar(select(Case).where(Case.number == request_id, _visible(request, ctx, session)))
        if case is None:
            raise Open311Error(404, "404", f"service_request_id {request_id!r} not found")
        return _answer(fmt, "service_requests", "request", [_request(case)])

    return _handle(fmt, run)


def _rating(case: Case) -> dict:
    return {"service_request_id": case.number, "status": "closed" if case.state == "closed" else "open",
            "service_name": _request(case)["service_name"], "description": case.description or "",
            "updated_datetime": _iso(case.closed_at), "rating": case.rating}


@router.get("/requests/{request_id}/rating.{fmt}",
            summary="The reporter's rating of a closed request (the link of the closure message: token required)")
def get_rating(request_id: str, fmt: str, request: Request, session: DB):
    def run(fmt):
        _jurisdiction(request)
        case = actions.reporter_case(session, request_id, request.query_params.get("token") or "")
        return _answer(fmt, "ratings", "rating", [_rating(case)])

    return _handle(fmt, run)


@router.post("/requests/{request_id}/rating.{fmt}",
             summary="The reporter rates a closed request 1–5 once (form-encoded: token, rating, comment)")
async def post_rating(request_id: str, fmt: str, request: Request, ctx: Ctx, session: DB):
    form = await _form(request, ctx)

    def run(fmt):
        _jurisdiction(request, form)
        token = form.get("token") or request.query_params.get("token") or ""
        raw = (form.get("rating") or "").strip()
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 5):
            actions.reporter_case(session, request_id, token)  # a stranger learns nothing about the rating
            raise Open311Error(400, "400", "rating must be a whole number from 1 to 5")
        with routing.write_section(session):
            actions.rate_by_reporter(session, request_id, token, int(raw), form.get("comment") or None)
            session.commit()
        case = session.scalar(select(Case).where(Case.number == request_id))
        return _answer(fmt, "ratings", "rating", [_rating(case)])

    return await asyncio.to_thread(_handle, fmt, run)


@router.get("/tokens/{token}.{fmt}", summary="Open311 request id from token (every service here is realtime)")
def token(token: str, fmt: str, request: Request):
    def run(fmt):
        _jurisdiction(request)
        raise Open311Error(404, "404", f"token {token!r} not found: every service is realtime and returns an id at once")

    return _handle(fmt, run)
