"""The phone command room's first view written into its HTML by the server: the user's households to move, with the
incident and its summary, as plain markup painted before any script.

On a poor connection ("Fast 3G": 562 ms per round trip, ~180 kB/s) the app's own list needs the page and then one
more round trip for ``/api/evacuations/mine`` (started by the page's first lines), and a busy phone's time to run the
inlined app. The page request carries no Authorization header, so the server knows the user from the session cookie
set at login beside the token (``core.web.PAGE_COOKIE``); the list is the same answer the API gives that user —
``tasks.evacuation.my_households`` with the user's scope and personal-data permission — so nothing beyond the
user's scope can be written into the page. The app replaces it with its own list (``phone/HouseholdsTab.vue``);
a small script right after it hides it unless the stored session is the same user and the incident the app will
show is the one drawn (``FIRST_VIEW_CHECK``).
"""

from __future__ import annotations

import math
from html import escape
from urllib.parse import quote

from sqlalchemy.orm import Session

from cityops.identity.service import Principal
from cityops.tasks import evacuation

#: Where the build leaves room for the first view in phone.html (right after <body>, before the inlined app).
MARKER = "<!--cityops-first-view-->"
#: The states the phone lists (src/first-paint.js OPEN_STATES).
OPEN_STATES = ["to_move", "refused", "not_home"]
#: Households drawn: a phone's screen shows a handful; the app brings the rest.
MAX_ROWS = 30
#: Colours of the app's state tags (src/map/live.js STATE_COLOURS).
STATE_COLOURS = {"to_move": "#e5484d", "refused": "#a855f7", "not_home": "#f59e0b", "moved": "#22c55e",
                 "with_relatives": "#14b8a6", "in_shelter": "#3b82f6", "returned": "#94a3b8"}

# The app's look (pages/Phone.vue, phone/HouseholdsTab.vue), so the swap does not jump.
STYLE = """<style>
#first-view{position:fixed;inset:0;z-index:5;display:flex;flex-direction:column;background:#0b1a2e;color:#e6eef8;
font:14px/1.45 system-ui,"PingFang SC","Microsoft YaHei","Noto Sans CJK SC",sans-serif}
#first-view[hidden]{display:none}
#first-view .fv-bar{display:flex;flex-direction:column;line-height:1.2;padding:8px 10px;background:#06111f;border-bottom:1px solid #1d3a5c}
#first-view .fv-bar strong{color:#fff;font-size:16px}#first-view .fv-bar span{color:#b9cde2;font-size:12px}
#first-view .fv-main{flex:1;min-height:0;overflow:auto;padding:10px;display:flex;flex-direction:column;gap:10px}
#first-view .fv-summary{border-radius:10px;padding:10px 12px;border:1px solid #24456b;background:#102540}
#first-view .fv-summary.working{background:#3a1218;border-color:#b91c1c}
#first-view .fv-summary.done{background:#0f3b24;border-color:#15803d}
#first-view .fv-title{font-weight:700;color:#fff;margin-bottom:2px}
#first-view .fv-hh{background:#102540;border:1px solid #24456b;border-radius:10px;padding:10px}
#first-view .fv-head{display:flex;align-items:center;gap:8px}
#first-view .fv-name{font-weight:700;font-size:16px;color:#fff;flex:1}
#first-view .fv-state{font-size:12px;border-radius:10px;padding:1px 8px;color:#fff}
#first-view .fv-meta{color:#cbd9e8;font-size:13px;margin:4px 0 0}
#first-view a{color:#7cc4ff}
</style>"""

#: Runs right after the drawing: shows it only for the user of the stored session, in the language the app will
#: use, for the incident the app will show (the one asked for in the address, else the one of the last visit);
#: otherwise removes it, so nothing else flashes before the app.
FIRST_VIEW_CHECK = (
    "<script>(function(){var d=document.getElementById('first-view');try{"
    "var s=JSON.parse(localStorage.getItem('cityops.session')||'null');"
    "var c=JSON.parse(localStorage.getItem('cityops.phone.'+d.dataset.user)||'null')||{};"
    "var w=Number(new URLSearchParams(location.search).get('incident'))||c.incidentId||0;"
    "if(s&&s.user&&s.user.username===d.dataset.user&&new Date(s.expiresAt)>new Date()"
    "&&(localStorage.getItem('cityops.language')||'zh-CN')===d.dataset.lang"
    "&&(!w||w===Number(d.dataset.incident))){d.hidden=false;return;}}catch(e){}d.remove();})();</script>")


def _near(lon: str | None, lat: str | None) -> tuple[float, float] | None:
    """The position in the page's address (as the app reads it), or None when absent or not a position."""
    try:
        x, y = float(lon), float(lat)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return (x, y) if math.isfinite(x) and math.isfinite(y) and -180 <= x <= 180 and -90 <= y <= 90 else None


def _incident(value: str | None) -> int | None:
    try:
        n = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return n if 0 < n < 2**31 else None


def _distance(metres: float | None) -> str:
    if metres is None:
        return ""
    return f"{round(metres)} m" if metres < 1000 else f"{metres / 1000:.1f} km" if metres < 10000 else f"{metres / 1000:.0f} km"


def phone_first_view(session: Session, principal: Principal, query, messages: dict[str, str],
                     language: str) -> str | None:
    """The markup (style, the drawing, its check) of the households list for ``principal`` in ``language`` (whose
    ``messages``), or None when the page shows no list (no permission, no active incident). ``query``: the page's
    query parameters (incident, lon, lat)."""
    if not principal.role.allows("tasks.read"):
        return None
    mine = evacuation.my_households(session, principal.scope, incident_id=_incident(query.get("incident")),
                                    states=OPEN_STATES, near=_near(query.get("lon"), query.get("lat")),
                                    personal=principal.role.allows("personal.read"))
    if not mine["incident_id"]:
        return None
    incident = next(i for i in mine["incidents"] if i["id"] == mine["incident_id"])
    totals = (mine["totals"] or {}).get("district") or {}
    t = messages.get
    total, remaining, safe = (int(totals.get(k) or 0) for k in ("households", "remaining_households", "safe_households"))
    summary = (t("phone.summary").replace("{remaining}", str(remaining)).replace("{safe}", str(safe))
               .replace("{total}", str(total)) if total else t("phone.none_mine"))
    tone = "working" if total and remaining else "done" if total else ""
    rows = []
    for h in mine["evacuations"]["items"][:MAX_ROWS]:
        name = h.get("head_name") or t("phone.household")
        meta = [escape(t("phone.people_n").replace("{n}", str(h.get("members") or 0)))]
        if h.get("vulnerable"):
            meta.append(escape(t("phone.vulnerable_n").replace("{n}", str(h["vulnerable"]))))
        if h.get("distance_m") is not None:
            meta.append(_distance(h["distance_m"]))
        if h.get("phone"):
            meta.append(f'<a href="tel:{escape(h["phone"])}">{escape(h["phone"])}</a>')
        geo = (f'geo:{h["lat"]},{h["lon"]}?q={h["lat"]},{h["lon"]}({quote(h.get("head_name") or h.get("address") or "")})'
               if h.get("lat") is not None and h.get("lon") is not None else "")
        nav = f' · <a href="{escape(geo)}">{escape(t("phone.navigate"))}</a>' if geo else ""
        rows.append(f'<article class="fv-hh" data-id="{int(h["id"])}"><div class="fv-head"><span class="fv-name">{escape(name)}</span>'
                    f'<span class="fv-state" style="background:{STATE_COLOURS.get(h["state"], "#94a3b8")}">'
                    f'{escape(t("tasks.state." + h["state"]) or h["state"])}</span></div>'
                    f'<div class="fv-meta">{escape(h.get("address") or "")}<br>{" · ".join(meta)}{nav}</div></article>')
    if total and not rows:
        rows.append(f'<div class="fv-summary done">{escape(t("tasks.phone.all_done"))}</div>')
    return (f'{STYLE}<div id="first-view" hidden data-user="{escape(principal.username)}" data-lang="{escape(language)}" '
            f'data-incident="{int(mine["incident_id"])}"><header class="fv-bar"><strong>{escape(t("tasks.phone.title"))}</strong>'
            f'<span>{escape(principal.display_name or principal.username)}</span></header><main class="fv-main">'
            f'<div class="fv-summary {tone}"><div class="fv-title">{escape(incident["title"])}</div>'
            f'<div class="fv-counts" data-remaining="{remaining}" data-safe="{safe}" data-total="{total}">{escape(summary)}</div></div>'
            f'{"".join(rows)}</main></div>{FIRST_VIEW_CHECK}')
