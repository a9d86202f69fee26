"""Brute-force protection of password logins: failures counted per account and per client address, lockout.

Every password check — ``POST /api/auth/login``, HTTP Basic on ``/sta`` (and any other interface that takes a
password) — goes through ``identity.service.authenticate_limited``, which calls :func:`check` before the
password is looked at and :func:`failed` / :func:`succeeded` after. ``Settings`` holds the limits: more than
``login_max_failures_per_account`` failures of one username (existing or not, so a lockout reveals nothing)
or ``login_max_failures_per_address`` from one client address within ``login_failure_window_s`` lock it for
``login_lockout_s``. A locked account or address is refused before its password is checked, even the right
one. An operator lifts a lock (``DELETE /api/auth/lockouts/{kind}/{key}``, ``cityops users unlock``).

The counters live in the database (``login_throttle``), so all server processes share them. A failure is
counted with one UPDATE (an INSERT the first time), atomic on both backends, so concurrent failures are all
counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.errors import CityOpsError
from cityops.core.types import utcnow
from cityops.identity.models import LoginThrottle

KINDS = ("account", "address")


class LockedOut(CityOpsError):
    """Too many failed logins for the account or the client address (HTTP 429 with Retry-After)."""

    status_code = 429
    code = "locked_out"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, {"retry_after": retry_after})
        self.retry_after = retry_after


@dataclass(frozen=True)
class Limits:
    per_account: int
    per_address: int
    window: timedelta
    lockout: timedelta

    @classmethod
    def of(cls, settings) -> "Limits":
        return cls(settings.login_max_failures_per_account, settings.login_max_failures_per_address,
                   timedelta(seconds=settings.login_failure_window_s), timedelta(seconds=settings.login_lockout_s))


def _keys(username: str | None, address: str | None) -> list[tuple[str, str]]:
    return [(kind, key) for kind, key in (("account", username), ("address", address)) if key]


def check(session: Session, username: str | None, address: str | None) -> None:
    """Raise ``LockedOut`` when the account or the address is locked now."""
    keys = _keys(username, address)
    if not keys:
        return
    now = utcnow()
    locked = session.scalars(select(LoginThrottle).where(
        or_(*[and_(LoginThrottle.kind == kind, LoginThrottle.key == key) for kind, key in keys]),
        LoginThrottle.locked_until > now)).all()
    if locked:
        until = max(row.locked_until for row in locked)
        raise LockedOut("too many failed logins for this account or address; try again later or ask an operator "
                        "to lift the lock", max(1, int((until - now).total_seconds()) + 1))


def failed(session: Session, limits: Limits, username: str | None, address: str | None, *, channel: str,
           reason: str) -> None:
    """Count a failed login for the account and the address, lock them at their limit, and audit it. The
    caller commits (a failure must be kept even though the request fails)."""
    now = utcnow()
    for kind, key in _keys(username, address):
        maximum = limits.per_account if kind == "account" else limits.per_address
        failures = _count(session, kind, key, now, limits.window)
        if failures >= maximum:
            locked = session.execute(update(LoginThrottle).where(
                LoginThrottle.kind == kind, LoginThrottle.key == key,
                or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until <= now))
                .values(locked_until=now + limits.lockout).execution_options(synchronize_session=False)).rowcount
            if locked:
                audit.record(session, audit.SYSTEM, "auth.lockout", kind, key,
                             after={"failures": failures, "until": (now + limits.lockout).isoformat()})
    refused(session, username, address, channel=channel, reason=reason)
    # Forget counters nobody has added to for a window and that lock nothing (unknown usernames pile up).
    session.execute(delete(LoginThrottle).where(LoginThrottle.updated_at < now - limits.window,
                                                or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now))
                    .execution_options(synchronize_session=False))


def refused(session: Session, username: str | None, address: str | None, *, channel: str, reason: str) -> None:
    """Audit a failed login (counted by ``failed``, or refused while locked)."""
    audit.record(session, audit.Actor(username or "(none)"), "auth.login_failed", "user", username or "",
                 after={"address": address, "channel": channel, "reason": reason})


def _count(session: Session, kind: str, key: str, now: datetime, window: timedelta) -> int:
    """Add one failure (a new window when the last one is over); the failures in the window now."""
    fresh = LoginThrottle.window_start < now - window
    bump = (update(LoginThrottle).where(LoginThrottle.kind == kind, LoginThrottle.key == key)
            .values(failures=case((fresh, 1), else_=LoginThrottle.failures + 1),
                    window_start=case((fresh, now), else_=LoginThrottle.window_start), updated_at=now)
            .returning(LoginThrottle.failures).execution_options(synchronize_session=False))
    failures = session.scalar(bump)
    if failures is None:
        try:
            with session.begin_nested():
                session.add(LoginThrottle(kind=kind, key=key, failures=1, window_start=now, updated_at=now))
            return 1
        except IntegrityError:  # another process counted this key's first failure meanwhile
            failures = session.scalar(bump)
    return failures


def succeeded(session: Session, username: str) -> None:
    """A correct password clears the account's failures (not the address's: one valid account must not let
    an address go on guessing others). Read first: HTTP Basic clients log in on every request, and a DELETE,
    even of nothing, would take SQLite's write lock each time."""
    if session.scalar(select(LoginThrottle.id).where(LoginThrottle.kind == "account", LoginThrottle.key == username)
                      .limit(1)) is None:
        return
    session.execute(delete(LoginThrottle).where(LoginThrottle.kind == "account", LoginThrottle.key == username)
                    .execution_options(synchronize_session=False))


def locks(session: Session) -> list[LoginThrottle]:
    """Accounts and addresses locked now, and those with failures in their window."""
    return list(session.scalars(select(LoginThrottle).order_by(LoginThrottle.kind, LoginThrottle.key)))


def lift(session: Session, actor: audit.Actor, kind: str, key: str) -> bool:
    """Lift the lock (and forget the failures) of an account or address; False when there was none."""
    row = session.scalar(select(LoginThrottle).where(LoginThrottle.kind == kind, LoginThrottle.key == key))
    if row is None:
        return False
    audit.record(session, actor, "auth.unlock", kind, key,
                 before={"failures": row.failures, "locked_until": row.locked_until.isoformat() if row.locked_until else None})
    session.delete(row)
    return True
