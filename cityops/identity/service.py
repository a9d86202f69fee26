"""Users, passwords (argon2), bearer tokens and API keys; resolution of a token to a Principal."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from cachetools import TTLCache
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.bus import publish
from cityops.core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from cityops.core.types import utcnow
from cityops.identity.manifest import AccessChanged
from cityops.identity.models import Token, User
from cityops.identity.roles import Role, get_role, may_grant
from cityops.identity.scope import DISTRICT_LEVELS, Scope
from cityops.org.models import Department, Unit

_hasher = PasswordHasher()
LOGIN_PREFIX = "cot_"
API_KEY_PREFIX = "cok_"
MIN_PASSWORD_LENGTH = 8
#: A resolved token is reused for this long. Revocation, logout and user changes made through this process
#: take effect at once (they drop the cache); made by another process, within this many seconds.
TOKEN_CACHE_SECONDS = 5.0


def _clock() -> float:
    return time.monotonic()


# (database, token hash) → (Principal, token expiry). Resolving a token (HMAC, token row, user row, scope
# units) was a third of a case creation's server time; bounded so a flood of distinct tokens cannot grow it.
_principals: TTLCache = TTLCache(maxsize=10_000, ttl=TOKEN_CACHE_SECONDS, timer=lambda: _clock())
_principals_lock = threading.Lock()


def forget_principals(session: Session | None = None, *, usernames: list[str] | None = None, change: str = "changed") -> None:
    """Drop every cached token resolution (revocations, user changes) now; with ``session``, also announce
    ``access.changed`` in its transaction, so every worker drops its own after the commit (a request resolving
    the token in between cannot keep the old answer)."""
    with _principals_lock:
        _principals.clear()
    if session is not None:
        publish(session, AccessChanged(usernames=sorted(usernames or []), change=change))


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    display_name: str
    role: Role
    scope: Scope
    language: str

    def require(self, permission: str) -> None:
        if not self.role.allows(permission):
            raise Forbidden(f"role {self.role.key!r} lacks permission {permission!r}")

    def actor(self, request_id: str | None = None) -> audit.Actor:
        return audit.Actor(self.username, self.user_id, request_id)


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def _token_hash(secret: str, token: str) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def _user_snapshot(user: User) -> dict:
    return {
        "username": user.username,
        "display_name": user.display_name,
        "role": user.role,
        "scope_units": list(user.scope_units),
        "scope_departments": list(user.scope_departments),
        "active": user.active,
        "language": user.language,
    }


def resolve_scope(session: Session, user: User, role: Role) -> Scope:
    if role.all_units:
        return Scope(all_units=True, department_codes=tuple(user.scope_departments))
    paths, whole_district = [], False
    if user.scope_units:
        rows = session.execute(select(Unit.path, Unit.level).where(Unit.code.in_(user.scope_units))).all()
        paths = [path for path, _ in rows]
        whole_district = any(level in DISTRICT_LEVELS for _, level in rows)
    if user.scope_departments and not paths:
        # Department staff work where their departments work.
        paths = list(session.scalars(select(Department.unit_path).where(Department.code.in_(user.scope_departments))))
    return Scope(unit_paths=tuple(sorted(set(paths))), department_codes=tuple(user.scope_departments),
                 whole_district=whole_district)


def principal_for(session: Session, user: User) -> Principal:
    role = get_role(user.role)
    return Principal(user.id, user.username, user.display_name, role, resolve_scope(session, user, role), user.language)


def require_grant(by: Principal, role: Role) -> None:
    """Refuse (403) giving ``role`` to a user, or changing a user who has it, unless the grant rule allows it."""
    if not may_grant(by.role, role):
        extra = sorted(role.effective_permissions - by.role.effective_permissions)
        reason = f"it holds permissions yours does not ({', '.join(extra[:5])}{' …' if len(extra) > 5 else ''})" if extra \
            else "it reaches every unit"
        raise Forbidden(f"your role {by.role.key!r} may not grant role {role.key!r}: {reason}")


def require_acting_as(by: Principal, user: User, what: str) -> None:
    """Credentials that act as another user (API keys, password resets) are an administrator's act."""
    if user.id != by.user_id and not by.role.allows("users.credentials"):
        raise Forbidden(f"{what} for another user needs users.credentials (an administrator's act)")


def _check_scope_assignment(session: Session, by: Principal | None, scope_units: list[str], scope_departments: list[str]) -> None:
    found = {u.code: u.path for u in session.scalars(select(Unit).where(Unit.code.in_(scope_units)))}
    missing = [c for c in scope_units if c not in found]
    if missing:
        raise InvalidInput(f"unknown unit codes in scope_units: {', '.join(missing)}")
    depts = dict(session.execute(select(Department.code, Department.unit_path).where(Department.code.in_(scope_departments))).all())
    missing = [c for c in scope_departments if c not in depts]
    if missing:
        raise InvalidInput(f"unknown department codes in scope_departments: {', '.join(missing)}")
    if by is not None:
        # Granting scope never exceeds the granter's own: units and departments alike (a department's
        # scope is its owning unit's subtree, see resolve_scope).
        for code, path in found.items():
            by.scope.require_covers(path, f"unit {code}")
        for code, path in depts.items():
            if code not in by.scope.department_codes:
                by.scope.require_covers(path, f"department {code}")


def create_user(
    session: Session,
    actor: audit.Actor,
    *,
    username: str,
    password: str | None,
    role: str,
    display_name: str | None = None,
    scope_units: list[str] | None = None,
    scope_departments: list[str] | None = None,
    person_id: int | None = None,
    language: str = "zh-CN",
    by: Principal | None = None,
) -> User:
    """Create a user. ``by`` (the acting principal) may only grant scope it covers and roles the grant rule
    allows it (``may_grant``); without ``by`` the system acts (CLI, demo)."""
    username = username.strip()
    if not username or len(username) > 64:
        raise InvalidInput("username must have 1–64 characters")
    role_obj = get_role(role)
    if by is not None:
        require_grant(by, role_obj)
    scope_units = list(scope_units or [])
    scope_departments = list(scope_departments or [])
    if not role_obj.all_units and not scope_units and not scope_departments:
        raise InvalidInput(f"role {role!r} needs scope_units or scope_departments")
    _check_scope_assignment(session, by, scope_units, scope_departments)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"username {username!r} already exists")
    if language not in {"zh-CN", "en"}:
        raise InvalidInput(f"unsupported language {language!r}; use zh-CN or en")
    user = User(
        username=username,
        display_name=display_name or username,
        role=role,
        password_hash=hash_password(password) if password else None,
        scope_units=scope_units,
        scope_departments=scope_departments,
        person_id=person_id,
        language=language,
        active=True,
    )
    session.add(user)
    session.flush()
    audit.record(session, actor, "user.create", "user", username, after=_user_snapshot(user),
                 unit_path=None)
    return user


def visible_users(session: Session, principal: Principal) -> list[User]:
    users = list(session.scalars(select(User).order_by(User.username)))
    if principal.role.all_units:
        return users
    result = []
    for user in users:
        target = principal_for(session, user)
        if target.scope.unit_paths and all(principal.scope.covers(p) for p in target.scope.unit_paths) and not target.role.all_units:
            result.append(user)
    return result


def update_user(session: Session, principal: Principal, actor: audit.Actor, username: str, changes: dict) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None or user not in visible_users(session, principal):
        raise NotFound(f"user {username!r} not found")
    before = _user_snapshot(user)
    # A user whose role the principal could not grant is not the principal's to change (nor to disable); a
    # new role must be grantable too, so nobody raises their own role or anyone else's above their own.
    require_grant(principal, get_role(user.role))
    if changes.get("password"):
        require_acting_as(principal, user, "resetting the password")
    if "role" in changes and changes["role"] is not None:
        require_grant(principal, get_role(changes["role"]))
        user.role = changes["role"]
    if changes.get("scope_units") is not None or changes.get("scope_departments") is not None:
        units = changes.get("scope_units") if changes.get("scope_units") is not None else user.scope_units
        depts = changes.get("scope_departments") if changes.get("scope_departments") is not None else user.scope_departments
        _check_scope_assignment(session, principal, list(units), list(depts))
        user.scope_units, user.scope_departments = list(units), list(depts)
    for key in ("display_name", "active", "language"):
        if changes.get(key) is not None:
            setattr(user, key, changes[key])
    if changes.get("password"):
        user.password_hash = hash_password(changes["password"])
        audit.record(session, actor, "user.password_reset" if user.id != principal.user_id else "user.password_change",
                     "user", username, after={"by": principal.username})
    if changes.get("active") is False:
        for token in session.scalars(select(Token).where(Token.user_id == user.id, Token.revoked_at.is_(None))):
            token.revoked_at = utcnow()
    audit.record(session, actor, "user.update", "user", username, before=before, after=_user_snapshot(user))
    forget_principals(session, usernames=[username], change="user.update")
    return user


def authenticate(session: Session, username: str, password: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    # The password check takes a second of CPU on a busy machine: the read transaction ends first, so the
    # request holds no pooled connection (nor, on SQLite, a read snapshot) meanwhile. Many logins at once
    # otherwise took every connection and other requests timed out waiting for one.
    session.commit()
    if user is None or not user.active or not user.password_hash:
        # Spend the same effort as a real check so timing does not reveal which usernames exist.
        _hasher.hash(password or "x")
        raise Unauthenticated("wrong username or password")
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        raise Unauthenticated("wrong username or password") from None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


#: The username that goes with an API key given as an HTTP Basic password (the key alone names its user).
API_KEY_USERNAME = "apikey"


def _api_key_owner(session: Session, secret: str, username: str, raw: str) -> User:
    """The user of API key ``raw`` given as a Basic password, under username ``apikey`` or the key's own user."""
    principal = resolve_token(session, secret, raw)
    if username not in (API_KEY_USERNAME, principal.username):
        raise Unauthenticated("wrong username or API key")
    return session.get(User, principal.user_id)


def authenticate_limited(session: Session, settings, username: str, password: str, *, address: str | None,
                         channel: str, api_key: bool = False) -> User:
    """``authenticate`` behind the brute-force limits (``identity.throttle``): every interface that checks a
    password calls this — the API login and HTTP Basic on /ogc, the tiles and /sta. A locked account or address
    is refused (``LockedOut``, 429) before the password is looked at; a failure is counted and audited and
    *committed* here, since the request that fails rolls back; success clears the account's failures.
    ``address`` is the client's IP address (``request.client.host``).

    ``api_key``: the password may be an API key (HTTP Basic, for clients that cannot send a header of their
    own); a wrong key counts as a failure like a wrong password. Under the username ``apikey`` only the address
    is counted, or anyone could lock every key user out by failing as ``apikey``."""
    from cityops.identity import throttle

    by_key = api_key and password.startswith(API_KEY_PREFIX)
    account = None if by_key and username == API_KEY_USERNAME else username
    try:
        throttle.check(session, account, address)
    except throttle.LockedOut:
        throttle.refused(session, account, address, channel=channel, reason="locked")
        session.commit()
        raise
    try:
        user = _api_key_owner(session, settings.resolved_secret, username, password) if by_key else \
            authenticate(session, username, password)
    except Unauthenticated as exc:
        session.rollback()
        throttle.failed(session, throttle.Limits.of(settings), account, address, channel=channel, reason=exc.message)
        session.commit()
        raise
    throttle.succeeded(session, user.username)
    return user


def issue_token(
    session: Session, secret: str, user: User, *, kind: str = "login", ttl: timedelta | None = None, name: str | None = None
) -> tuple[str, Token]:
    prefix = LOGIN_PREFIX if kind == "login" else API_KEY_PREFIX
    raw = prefix + secrets.token_urlsafe(32)
    token = Token(
        user_id=user.id,
        kind=kind,
        name=name,
        token_hash=_token_hash(secret, raw),
        expires_at=(utcnow() + ttl) if ttl else None,
    )
    session.add(token)
    session.flush()
    return raw, token


def cached_principal(database_url, secret: str, raw: str) -> Principal | None:
    """The principal of a token resolved within the last TOKEN_CACHE_SECONDS, or None (no database read)."""
    with _principals_lock:
        hit = _principals.get((str(database_url), _token_hash(secret, raw)))
    if hit is not None and (hit[1] is None or hit[1] > utcnow()):
        return hit[0]
    return None


def resolve_token(session: Session, secret: str, raw: str) -> Principal:
    url = session.get_bind().url
    principal = cached_principal(url, secret, raw)
    if principal is not None:
        return principal
    digest = _token_hash(secret, raw)
    now: datetime = utcnow()
    token = session.scalar(select(Token).where(Token.token_hash == digest))
    if token is None or token.revoked_at is not None:
        raise Unauthenticated("invalid or revoked token")
    if token.expires_at is not None and token.expires_at <= now:
        raise Unauthenticated("token expired; log in again")
    user = session.get(User, token.user_id)
    if user is None or not user.active:
        raise Unauthenticated("account disabled")
    principal = principal_for(session, user)
    with _principals_lock:
        _principals[(str(url), digest)] = (principal, token.expires_at)
    return principal


def revoke_token(session: Session, secret: str, raw: str) -> None:
    token = session.scalar(select(Token).where(Token.token_hash == _token_hash(secret, raw)))
    if token is not None and token.revoked_at is None:
        token.revoked_at = utcnow()
    forget_principals(session, change="token.revoked")


def display_names(session: Session, actors) -> dict[str, str]:
    """Display names of the users among ``actors`` (audit actor names), so that every screen can name the
    people in a history without the right to list users. System and demo actors (``system:routing``,
    ``warning``) are not users: the web app's message catalogue names them in the reader's language."""
    names = {a for a in actors if a and ":" not in a}
    if not names:
        return {}
    return dict(session.execute(select(User.username, User.display_name).where(User.username.in_(sorted(names)))).all())
