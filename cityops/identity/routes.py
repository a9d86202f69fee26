"""Routes: login/logout, the current user, user management and API keys."""

from __future__ import annotations

from datetime import datetime, timedelta
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from cityops.core import audit
from cityops.core.errors import NotFound
from cityops.core.web import (DB, Ctx, bearer_token, clear_page_cookie, client_address, current_principal, request_id,
                              require, set_page_cookie)
from cityops.identity import service, throttle
from cityops.identity.models import User
from cityops.identity.roles import load_roles

router = APIRouter(prefix="/api", tags=["identity"])


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class UserOut(BaseModel):
    username: str
    display_name: str
    role: str
    scope_units: list[str]
    scope_departments: list[str]
    language: str
    active: bool


class LoginOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: datetime
    user: UserOut


class UserIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str | None = Field(default=None, min_length=8, max_length=256)
    role: str
    display_name: str | None = Field(default=None, max_length=128)
    scope_units: list[str] = []
    scope_departments: list[str] = []
    language: str = "zh-CN"


class UserPatch(BaseModel):
    password: str | None = Field(default=None, min_length=8, max_length=256)
    role: str | None = None
    display_name: str | None = Field(default=None, max_length=128)
    scope_units: list[str] | None = None
    scope_departments: list[str] | None = None
    language: str | None = None
    active: bool | None = None


class RoleName(BaseModel):
    zh_cn: str = Field(alias="zh-CN")
    en: str


class MeOut(UserOut):
    role_name: RoleName
    permissions: list[str]
    scope_paths: list[str] = Field(description="unit paths of your scope")
    all_units: bool = Field(description="your scope is every unit")


class RoleOut(BaseModel):
    key: str
    name_zh: str
    name_en: str
    permissions: list[str]


class ApiKeyOut(BaseModel):
    api_key: str = Field(description="shown once")
    name: str
    expires_at: datetime | None


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


def _user_out(user: User) -> UserOut:
    return UserOut(username=user.username, display_name=user.display_name, role=user.role,
                   scope_units=list(user.scope_units), scope_departments=list(user.scope_departments),
                   language=user.language, active=user.active)


@router.post("/auth/login", response_model=LoginOut, summary="Password login (登录) → expiring bearer token")
def login(body: LoginIn, request: Request, response: Response, ctx: Ctx, session: DB) -> LoginOut:
    user = service.authenticate_limited(session, ctx.settings, body.username, body.password,
                                        address=client_address(request), channel="api")
    raw, token = service.issue_token(session, ctx.settings.resolved_secret, user,
                                     ttl=timedelta(minutes=ctx.settings.token_ttl_minutes))
    audit.record(session, audit.Actor(user.username, user.id, request_id(request)), "auth.login", "user", user.username,
                 after={"token_id": token.id, "expires_at": token.expires_at.isoformat()})
    session.commit()
    set_page_cookie(response, request, raw, ctx.settings.token_ttl_minutes * 60)
    return LoginOut(access_token=raw, expires_at=token.expires_at, user=_user_out(user))


@router.post("/auth/logout", status_code=204, summary="Revoke the token used for this request")
def logout(request: Request, response: Response, ctx: Ctx, session: DB, principal=Depends(current_principal)) -> None:
    service.revoke_token(session, ctx.settings.resolved_secret, bearer_token(request))
    clear_page_cookie(response, request)
    audit.record(session, principal.actor(request_id(request)), "auth.logout", "user", principal.username)
    session.commit()


@router.get("/auth/me", response_model=MeOut, summary="The current user, role, permissions and scope")
def me(session: DB, principal=Depends(current_principal)) -> dict:
    user = session.get(User, principal.user_id)
    return {
        **_user_out(user).model_dump(),
        "role_name": {"zh-CN": principal.role.name_zh, "en": principal.role.name_en},
        "permissions": sorted(principal.role.permissions),
        "scope_paths": list(principal.scope.unit_paths),
        "all_units": principal.scope.all_units,
    }


@router.get("/roles", response_model=list[RoleOut], summary="The role catalogue")
def roles(principal=Depends(current_principal)) -> list[dict]:
    return [{"key": r.key, "name_zh": r.name_zh, "name_en": r.name_en, "permissions": sorted(r.permissions)}
            for r in load_roles().values()]


@router.get("/users", response_model=list[UserOut], summary="Users inside your scope")
def list_users(session: DB, principal=Depends(require("users.read"))) -> list[UserOut]:
    return [_user_out(u) for u in service.visible_users(session, principal)]


@router.post("/users", response_model=UserOut, status_code=201, summary="Create a user inside your scope")
def create_user(body: UserIn, request: Request, session: DB, principal=Depends(require("users.manage"))) -> UserOut:
    user = service.create_user(session, principal.actor(request_id(request)), by=principal, **body.model_dump())
    session.commit()
    return _user_out(user)


@router.patch("/users/{username}", response_model=UserOut, summary="Change a user's role, scope, password or status")
def patch_user(username: str, body: UserPatch, request: Request, session: DB,
               principal=Depends(require("users.manage"))) -> UserOut:
    user = service.update_user(session, principal, principal.actor(request_id(request)), username,
                               body.model_dump(exclude_unset=True))
    session.commit()
    return _user_out(user)


@router.post("/users/{username}/api-keys", status_code=201, response_model=ApiKeyOut,
             summary="Issue an API key (shown once); for another user an administrator's act (users.credentials)")
def create_api_key(username: str, body: ApiKeyIn, request: Request, ctx: Ctx, session: DB,
                   principal=Depends(require("users.manage"))) -> dict:
    user = session.scalar(select(User).where(User.username == username))
    if user is None or user not in service.visible_users(session, principal):
        raise NotFound(f"user {username!r} not found")
    # A key acts as its user: for anyone but oneself it is acting as someone else.
    service.require_acting_as(principal, user, "an API key")
    ttl = timedelta(days=body.expires_in_days) if body.expires_in_days else None
    raw, token = service.issue_token(session, ctx.settings.resolved_secret, user, kind="api_key", ttl=ttl, name=body.name)
    audit.record(session, principal.actor(request_id(request)), "api_key.create", "user", username,
                 after={"name": body.name, "token_id": token.id, "acts_as": username, "issued_by": principal.username,
                        "expires_at": token.expires_at.isoformat() if token.expires_at else None})
    session.commit()
    return {"api_key": raw, "name": body.name, "expires_at": token.expires_at}



class LockoutOut(BaseModel):
    kind: str = Field(description="account (a username tried) or address (a client IP address)")
    key: str
    failures: int = Field(description="failed logins in the current window")
    locked_until: datetime | None = Field(description="locked until then (absent: not locked, failures counted)")


def _lock_visible(session, principal, kind: str, key: str) -> bool:
    """Accounts of users the principal manages; addresses, and usernames that name no user, only district-wide."""
    if principal.scope.district_wide:
        return True
    if kind != "account":
        return False
    return any(u.username == key for u in service.visible_users(session, principal))


@router.get("/auth/lockouts", response_model=list[LockoutOut],
            summary="Failed-login counters and lockouts (accounts you manage; addresses for district-wide managers)")
def list_lockouts(session: DB, principal=Depends(require("users.manage"))) -> list[LockoutOut]:
    return [LockoutOut(kind=t.kind, key=t.key, failures=t.failures, locked_until=t.locked_until)
            for t in throttle.locks(session) if _lock_visible(session, principal, t.kind, t.key)]


@router.delete("/auth/lockouts/{kind}/{key}", status_code=204, summary="Lift the lockout of an account or an address")
def lift_lockout(kind: str, key: str, request: Request, session: DB, principal=Depends(require("users.manage"))) -> None:
    if kind not in throttle.KINDS:
        raise NotFound(f"no lockout kind {kind!r}; use account or address")
    if not _lock_visible(session, principal, kind, key) or not throttle.lift(session, principal.actor(request_id(request)), kind, key):
        raise NotFound(f"no lockout of {kind} {key!r}")
    session.commit()
