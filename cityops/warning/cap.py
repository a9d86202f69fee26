"""OASIS CAP 1.2 messages for risk-point warnings, and their Atom index (standards §8).

Each level change (``risk_warnings`` row) is one CAP message: ``Alert`` when a warning starts, ``Update``
when its level changes and ``Cancel`` when it ends, the latter two referencing the message they replace.
Element order follows the XSD's strict sequences. Times carry a numeric offset (Beijing ``+08:00``): the XSD
rejects ``Z`` and fractional seconds. 蓝 warnings are internal (domain §6): ``scope`` Restricted.

The evidence travels with the message: ``description`` holds every reason (the notes that made it red or held
it included), in the ``info``'s language; ``parameter``s name the decision and, per indicator ``n``, its
level, model and source, observation window and last reading, and its labelled figures
(``CityOps-indicator-<n>-<figure>``, the unit in the name).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from lxml import etree

from cityops.warning.catalogue import catalogue

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM_NS = "http://www.w3.org/2005/Atom"
XSD = Path(__file__).with_name("cap12.xsd")
BEIJING = ZoneInfo("Asia/Shanghai")
METRES_PER_KM = 1000
RESPONSE = {"blue": "Monitor", "yellow": "Prepare", "orange": "Evacuate", "red": "Evacuate", "none": "AllClear"}
URGENCY = {"blue": "Future", "yellow": "Expected", "orange": "Immediate", "red": "Immediate", "none": "Past"}
INSTRUCTION = {
    "blue": "加强巡查和监测,关注雨情变化。",
    "yellow": "加密监测频次,做好转移准备,通知受威胁群众。",
    "orange": "立即组织受威胁群众转移避险,禁止人员进入危险区。",
    "red": "立即撤离危险区全部人员,实施交通管制,启动应急预案。",
    "none": "预警解除,恢复常态监测。",
}


def cap_time(value: datetime) -> str:
    """``2026-07-09T14:05:00+08:00``: Beijing time, whole seconds, numeric offset (never ``Z``)."""
    return value.astimezone(BEIJING).replace(microsecond=0).isoformat(timespec="seconds")


def is_public(level: str, msg_type: str, previous_level: str) -> bool:
    """Public when the level it announces (or, for a Cancel, the one it ends) is published (黄 and above)."""
    levels = catalogue().levels
    shown = previous_level if msg_type == "Cancel" else level
    return bool(levels[shown].get("public"))


def _sub(parent, tag: str, text=None, ns: str = CAP_NS):
    el = etree.SubElement(parent, f"{{{ns}}}{tag}")
    if text is not None:
        el.text = str(text)
    return el


def _label(rp, hazard: dict) -> str:
    """The risk point's name, with its hazard appended unless the name already says it."""
    return rp.name if rp.name.endswith(hazard["name_zh"]) else f"{rp.name}{hazard['name_zh']}"


def _param(parent, tag: str, name: str, value) -> None:
    el = _sub(parent, tag)
    _sub(el, "valueName", name)
    _sub(el, "value", value)


def build_alert(warning, rp, base_url: str = "") -> bytes:
    """The CAP 1.2 ``<alert>`` of one warning of risk point ``rp`` (both ORM rows), as UTF-8 XML."""
    return etree.tostring(alert_element(warning, rp, base_url), xml_declaration=True, encoding="UTF-8", pretty_print=True)


def alert_element(warning, rp, base_url: str = ""):
    """The CAP 1.2 ``<alert>`` element of one warning."""
    cat = catalogue()
    cfg = cat.cap
    hazard = cat.hazard_types[rp.hazard_type]
    level = warning.level
    shown = warning.previous_level if warning.msg_type == "Cancel" else level
    lv = cat.levels[shown]
    public = is_public(level, warning.msg_type, warning.previous_level)
    sent = cap_time(warning.issued_at)
    alert = etree.Element(f"{{{CAP_NS}}}alert", nsmap={None: CAP_NS})
    _sub(alert, "identifier", warning.identifier)
    _sub(alert, "sender", cfg["sender"])
    _sub(alert, "sent", sent)
    _sub(alert, "status", "Exercise" if (rp.attributes or {}).get("exercise") else "Actual")
    _sub(alert, "msgType", warning.msg_type)
    _sub(alert, "source", "CityOps warning engine")
    _sub(alert, "scope", "Public" if public else "Restricted")
    if not public:
        _sub(alert, "restriction", "四级(蓝色)预警仅内部发布 (internal: level IV warnings are not published)")
    _sub(alert, "code", "CityOps-RiskPoint-1")
    if warning.cap_references:
        _sub(alert, "references", warning.cap_references)
    _sub(alert, "incidents", f"{cfg['district_code']}-{rp.code}")
    evidence = warning.reasons or {}
    indicators = evidence.get("indicators", [])
    for language in ("zh-CN", "en-US"):
        zh = language == "zh-CN"
        info = _sub(alert, "info")
        _sub(info, "language", language)
        _sub(info, "category", hazard["cap_category"])
        if hazard["cap_category"] == "Geo" and any(i.get("indicator") == "rainfall" and i.get("rank", 0) > 0 for i in indicators):
            _sub(info, "category", "Met")
        _sub(info, "event", hazard["event_zh"] if zh else f"{hazard['name_en']} risk warning")
        _sub(info, "responseType", RESPONSE[level])
        _sub(info, "urgency", URGENCY[level])
        _sub(info, "severity", lv.get("cap_severity", "Unknown"))
        _sub(info, "certainty", "Observed")
        _sub(info, "eventCode", None)  # filled below (valueName/value)
        code_el = info[-1]
        _sub(code_el, "valueName", "CityOps-hazard")
        _sub(code_el, "value", rp.hazard_type)
        _sub(info, "effective", sent)
        if warning.msg_type != "Cancel":
            _sub(info, "expires", cap_time(warning.issued_at + timedelta(hours=int(cfg["expires_h"]))))
        _sub(info, "senderName", cfg["sender_name"])
        if warning.msg_type == "Cancel":
            headline = f"{_label(rp, hazard)}{lv['name_zh']}预警解除" if zh else f"{rp.name}: {lv['name_en']} warning cancelled"
        else:
            headline = f"{_label(rp, hazard)}{lv['name_zh']}预警" if zh else f"{rp.name}: {hazard['name_en']} {lv['name_en']} warning"
        _sub(info, "headline", headline)
        reasons = evidence.get("reasons" if zh else "reasons_en") or evidence.get("reasons") or []
        _sub(info, "description", ("；" if zh else "; ").join(reasons) if reasons else headline)
        _sub(info, "instruction", INSTRUCTION[level])
        if base_url:
            _sub(info, "web", f"{base_url.rstrip('/')}/cap/alerts/{warning.identifier}.xml")
        _param(info, "parameter", "CityOps-level", level)
        _param(info, "parameter", "CityOps-previous-level", warning.previous_level)
        _param(info, "parameter", "CityOps-risk-point", rp.code)
        for indicator in indicators:
            out = indicator.get("output") or {}
            if indicator.get("indicator") == "rainfall" and out.get("exceedance_index") is not None:
                _param(info, "parameter", "CityOps-exceedance-index", out["exceedance_index"])
                _param(info, "parameter", "CityOps-event-rainfall-mm", out["event_rainfall_mm"])
            if indicator.get("indicator") == "displacement" and out.get("tangent_angle_deg") is not None:
                _param(info, "parameter", "CityOps-tangent-angle-deg", out["tangent_angle_deg"])
        _evidence_parameters(info, evidence, zh)
        area = _sub(info, "area")
        _sub(area, "areaDesc", f"{rp.name}({rp.unit_code})" if zh else f"{rp.name} ({rp.unit_code})")
        if rp.geom is not None:
            _sub(area, "circle", f"{rp.geom.y:.6f},{rp.geom.x:.6f} {rp.radius_m / METRES_PER_KM:.3f}")
        _param(area, "geocode", "GB/T 2260", cfg["district_code"])
        _param(area, "geocode", "CityOps-unit", rp.unit_code)
    return alert


def _evidence_parameters(info, evidence: dict, zh: bool) -> None:
    """The decision and each indicator's model, readings and figures as CAP parameters."""
    decision = evidence.get("decision") or {}
    if decision:
        _param(info, "parameter", "CityOps-rule", decision.get("rule_zh" if zh else "rule_en", ""))
        if decision.get("held_at"):
            _param(info, "parameter", "CityOps-held-at", decision["held_at"])
        for n, note in enumerate(decision.get("notes") or [], start=1):
            _param(info, "parameter", f"CityOps-decision-note-{n}", note["zh" if zh else "en"])
    for n, i in enumerate(evidence.get("indicators") or [], start=1):
        name = f"CityOps-indicator-{n}"
        label = i.get("name_zh" if zh else "name_en") or i.get("indicator")
        _param(info, "parameter", name, f"{label} (datastream {i.get('datastream_id')}): {i.get('level')} [{i.get('status')}]")
        model = i.get("model") or {}
        if model:
            _param(info, "parameter", f"{name}-model", f"{model.get('key')}: {model.get('formula')} — {model.get('source')}")
        obs = i.get("observations") or {}
        if obs.get("count"):
            last = (obs.get("recent") or [[None, None]])[-1]
            _param(info, "parameter", f"{name}-observations",
                   f"{obs['count']} readings {obs['window'][0]} – {obs['window'][1]}; last {last[0]} = {last[1]} {obs.get('unit', '')}".rstrip())
        for figure in i.get("figures") or []:
            if figure.get("value") is not None:
                unit = f"-{figure['unit']}" if figure.get("unit") else ""
                _param(info, "parameter", f"{name}-{figure['key']}{unit}", figure["value"])
        for note in i.get("notes") or []:
            _param(info, "parameter", f"{name}-note", note["zh" if zh else "en"])


def build_feed(entries: list[tuple], base_url: str, updated: datetime) -> bytes:
    """Atom index of CAP messages: ``entries`` = [(warning, risk_point), …], newest first; each entry links
    the message's own URL and carries the message inline."""
    cat = catalogue()
    feed = etree.Element(f"{{{ATOM_NS}}}feed", nsmap={None: ATOM_NS})
    _sub(feed, "id", f"urn:cityops:{cat.cap['district_code']}:cap", ATOM_NS)
    _sub(feed, "title", f"{cat.cap['sender_name']} 风险预警 (CAP 1.2)", ATOM_NS)
    _sub(feed, "updated", cap_time(updated), ATOM_NS)
    author = _sub(feed, "author", None, ATOM_NS)
    _sub(author, "name", cat.cap["sender_name"], ATOM_NS)
    link = _sub(feed, "link", None, ATOM_NS)
    link.set("rel", "self")
    link.set("href", f"{base_url.rstrip('/')}/cap")
    for warning, rp in entries:
        lv = cat.levels[warning.previous_level if warning.msg_type == "Cancel" else warning.level]
        hazard = cat.hazard_types[rp.hazard_type]
        entry = _sub(feed, "entry", None, ATOM_NS)
        _sub(entry, "id", f"urn:cityops:cap:{warning.identifier}", ATOM_NS)
        verb = {"Alert": "发布", "Update": "更新", "Cancel": "解除"}[warning.msg_type]
        _sub(entry, "title", f"{_label(rp, hazard)}{lv['name_zh']}预警{verb}", ATOM_NS)
        _sub(entry, "updated", cap_time(warning.issued_at), ATOM_NS)
        _sub(entry, "summary", ";".join((warning.reasons or {}).get("reasons", [])[:2]) or lv["name_zh"], ATOM_NS)
        link = _sub(entry, "link", None, ATOM_NS)
        link.set("rel", "alternate")
        link.set("type", "application/cap+xml")
        link.set("href", f"{base_url.rstrip('/')}/cap/alerts/{warning.identifier}.xml")
        category = _sub(entry, "category", None, ATOM_NS)
        category.set("term", f"{warning.msg_type} {lv.get('cap_severity', 'Unknown')}")
        # The whole message inline as well, so one request gives a reader every alert (as NWS feeds do).
        content = _sub(entry, "content", None, ATOM_NS)
        content.set("type", "application/cap+xml")
        content.append(alert_element(warning, rp, base_url))
    return etree.tostring(feed, xml_declaration=True, encoding="UTF-8", pretty_print=True)


_SCHEMA = None


def validate(xml: bytes) -> None:
    """Validate a CAP message against the OASIS CAP 1.2 XSD; raises ``lxml.etree.DocumentInvalid``."""
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = etree.XMLSchema(etree.parse(str(XSD)))
    _SCHEMA.assertValid(etree.fromstring(xml))
