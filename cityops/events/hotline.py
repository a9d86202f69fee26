"""12345 hotline tickets imported from CSV, all or nothing, idempotent per township ticket id."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.errors import Forbidden, InvalidInput, OutsideJurisdiction, PayloadTooLarge, ValidationFailed
from cityops.events import catalogue
from cityops.events.creation import draft_case, insert_drafts
from cityops.identity.scope import Scope
from cityops.org.locate import LocatorCache


HOTLINE_COLUMNS = ("ticket_id", "received_at", "class_code", "title", "description", "address", "lon", "lat",
                   "unit_code", "caller_name", "caller_phone", "urgency")


def hotline_key(township_code: str | None, ticket: str) -> str:
    """The idempotency key of a 12345 ticket: its id within the township it lies in.

    12345 tickets reach the district through each township's work-order system (属地: the township is the unit
    that answers for a ticket, domain.md 1.1 and 3), and ticket ids are only unique there. Keyed by township,
    one township's ticket can neither block nor reveal another's with the same id, while the same ticket
    imported by the township and by the district (two importers) is still one case — which keying by the
    importing unit would have duplicated."""
    return f"12345:{township_code or ''}:{ticket}"


def import_hotline_csv(session: Session, raw: bytes, actor: audit.Actor, scope: Scope,
                       locator: LocatorCache | None = None) -> dict:
    """Import 12345 hotline tickets (CSV, UTF-8 with or without BOM; columns ``HOTLINE_COLUMNS``, ticket_id,
    received_at and class_code required, plus a location). All or nothing: any bad row rejects the file with
    every problem listed. Tickets already imported (same ticket_id in the same township, ``hotline_key``) are
    skipped, so a re-import is safe."""
    settings = catalogue.settings()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("the CSV file is not UTF-8 text", {"field": "file"}) from None
    # newline="": the csv module reads line ends itself (a bare \r inside a field is data, or a row end), as its
    # documentation requires; split on \n first, such a field raised csv.Error (a 500).
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames or []
        missing = [c for c in ("ticket_id", "received_at", "class_code") if c not in header]
        if missing:
            raise ValidationFailed(f"the CSV header lacks column(s) {', '.join(missing)}",
                                   [{"row": 1, "problem": f"missing {missing}"}])
        rows = list(reader)
    except csv.Error as exc:
        raise ValidationFailed(f"the CSV file cannot be read at line {reader.line_num}: {exc}; nothing imported",
                               [{"row": reader.line_num, "problem": str(exc)}]) from None
    if len(rows) > settings.max_import_rows:
        raise PayloadTooLarge(f"{len(rows)} rows; at most {settings.max_import_rows} per file")
    problems, forbidden, drafts, tickets = [], [], [], []
    for n, row in enumerate(rows, start=2):
        ticket = (row.get("ticket_id") or "").strip()
        try:
            if not ticket:
                raise InvalidInput("ticket_id is empty")
            try:
                received = datetime.fromisoformat((row.get("received_at") or "").strip())
            except ValueError:
                raise InvalidInput(f"received_at {row.get('received_at')!r} is not an ISO 8601 time") from None
            if received.tzinfo is None:
                received = received.replace(tzinfo=catalogue.calendar().tz)
            lon, lat = row.get("lon") or None, row.get("lat") or None
            draft = draft_case(session, source="hotline", class_code=(row.get("class_code") or "").strip(),
                               title=row.get("title") or None, description=row.get("description") or None,
                               lon=float(lon) if lon else None, lat=float(lat) if lat else None,
                               address=row.get("address") or None, unit_code=(row.get("unit_code") or "").strip() or None,
                               urgency=(row.get("urgency") or "normal").strip(),
                               reporter={"name": row.get("caller_name"), "phone": row.get("caller_phone"), "channel": "12345"},
                               reported_at=received.astimezone(UTC), actor=actor, scope=scope, locator=locator)
            # The key needs the township, known once the ticket is located (and found in the caller's scope).
            draft.values["external_key"] = hotline_key(draft.values["township_code"], ticket)
            drafts.append(draft)
            tickets.append(ticket)
        except ValueError as exc:
            problems.append({"row": n, "ticket_id": ticket, "problem": str(exc)})
        except Forbidden as exc:
            forbidden.append({"row": n, "ticket_id": ticket, "problem": exc.message})
        except (InvalidInput, OutsideJurisdiction) as exc:
            problems.append({"row": n, "ticket_id": ticket, "problem": exc.message})
    if forbidden:  # rows outside the importer's scope: refuse the file as a whole (403)
        raise Forbidden(f"{len(forbidden)} row(s) lie outside your scope; nothing imported", forbidden)
    if problems:
        raise ValidationFailed(f"{len(problems)} of {len(rows)} row(s) rejected; nothing imported: "
                               f"row {problems[0]['row']}: {problems[0]['problem']}", problems)
    made, skipped = [], 0
    with session.begin_nested():
        for ticket, draft, result in zip(tickets, drafts, insert_drafts(session, drafts)):
            if isinstance(result, Exception):  # raised inside the savepoint: every row of this file is undone
                raise ValidationFailed(f"ticket {ticket}: {result}; nothing imported")
            if result[1]:
                made.append(draft.values["number"])
            else:  # imported before (in this township), or twice in the file
                skipped += 1
    audit.record(session, actor, "events.import_hotline", "event_case", "12345", after={"created": len(made), "skipped": skipped})
    return {"created": len(made), "skipped": skipped, "numbers": made}
