"""Users, bearer tokens and API keys, and the failed-login counters."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.types import JSONText, UTCDateTime, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    display_name: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[str] = mapped_column(Text, nullable=False)
    password_hash: Mapped[str | None] = mapped_column(Text)
    #: Roots of the administrative subtrees the user works in (unit codes).
    scope_units: Mapped[list] = mapped_column(JSONText, nullable=False, default=list)
    #: Departments the user works for (department codes).
    scope_departments: Mapped[list] = mapped_column(JSONText, nullable=False, default=list)
    person_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("people.id", ondelete="SET NULL"))
    language: Mapped[str] = mapped_column(Text, nullable=False, default="zh-CN")
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Token(Base):
    """A bearer credential: an expiring login token or a long-lived API key. Only a hash is kept."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False)  # "login" | "api_key"
    name: Mapped[str | None] = mapped_column(Text)
    token_hash: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoginThrottle(Base):
    """Failed password logins of one account or one client address, and its lockout (brute-force protection).

    In the database, not in process memory, so every server process (``--workers``, several machines) counts
    and enforces the same failures. ``identity.throttle`` keeps it."""

    __tablename__ = "login_throttle"
    __table_args__ = (UniqueConstraint("kind", "key", name="uq_login_throttle"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: "account" (the username tried, whether or not it exists) or "address" (the client's IP address).
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    key: Mapped[str] = mapped_column(Text, nullable=False)
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: The failures counted are those since this time (a window of ``login_failure_window_s``).
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
