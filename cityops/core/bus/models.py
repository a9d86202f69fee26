"""The bus's tables (migrations 0019–0020): the outbox, per-consumer cursors and processed events, dead
letters, and leases for work that runs once per deployment."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.types import JSONText

#: A 64-bit key that is SQLite's rowid there (INTEGER PRIMARY KEY), so ids are assigned in commit order.
SeqType = BigInteger().with_variant(Integer, "sqlite")


class OutboxEvent(Base):
    """An event, written in the transaction of the change it reports (``bus.publish``)."""

    __tablename__ = "bus_outbox"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    #: The writing transaction's id on PostgreSQL (0 on SQLite): readers take only events of transactions older
    #: than every running one, in (tx, seq) order, so an event committed late is never skipped (store.py).
    tx: Mapped[int] = mapped_column(BigInteger, nullable=False)
    event_id: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    payload: Mapped[dict] = mapped_column(JSONText, nullable=False)
    created_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Cursor(Base):
    """How far a durable consumer (or the relay) has read the outbox: (tx, seq) of the last event it finished."""

    __tablename__ = "bus_cursors"
    consumer: Mapped[str] = mapped_column(Text, primary_key=True)
    tx: Mapped[int] = mapped_column(BigInteger, nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Processed(Base):
    """One row per (consumer, event) applied: written in the consumer's own transaction, so a redelivered
    event is recognised and applied once."""

    __tablename__ = "bus_processed"
    consumer: Mapped[str] = mapped_column(Text, primary_key=True)
    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    processed_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)


class DeadLetter(Base):
    """An event a consumer failed on ``bus_max_attempts`` times, with the last error (for operators)."""

    __tablename__ = "bus_dead_letters"
    __table_args__ = (UniqueConstraint("consumer", "event_id", name="uq_bus_dead_letters"),)
    id: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    consumer: Mapped[str] = mapped_column(Text, nullable=False)
    event_id: Mapped[str] = mapped_column(Text, nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    payload: Mapped[dict] = mapped_column(JSONText, nullable=False)
    error: Mapped[str] = mapped_column(Text, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    dead_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Lease(Base):
    """Work that runs once per deployment (the relay, timers): held by one process until ``expires_ms``."""

    __tablename__ = "bus_leases"
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    holder: Mapped[str] = mapped_column(Text, nullable=False)
    expires_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)


class TimerRun(Base):
    """A periodic job's last run, claimed in the job's transaction: once per period per deployment."""

    __tablename__ = "bus_timers"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    last_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
    holder: Mapped[str] = mapped_column(Text, nullable=False)
    runs: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
