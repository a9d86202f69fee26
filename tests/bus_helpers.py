"""Shared helpers of the tests of the capabilities' consumers: deliver what the outbox holds to one of the wired
consumers (cityops.wiring) through the bus's own delivery (claim + handler + commit, as a reader does), and again,
as JetStream redelivers a message whose acknowledgement was lost."""

from __future__ import annotations

from cityops import wiring
from cityops.core.bus import Bus, Envelope
from cityops.core.bus.runtime import apply
from cityops.core.bus.store import head, read_after


def outbox_head(store) -> tuple[int, int]:
    """Where the outbox ends now: ``deliver`` from here takes only what is published after."""
    with store.sessions() as s:
        return head(s)


def wired(consumer: str):
    return next(s for s in wiring.subscriptions() if s.consumer == consumer)


def deliver(store, consumer: str, since: tuple[int, int], *, twice: bool = False) -> list[Envelope]:
    """Apply the events published after ``since`` to ``consumer``, each once (``twice``: then each again)."""
    bus, sub = Bus(store.engine, store.settings), wired(consumer)
    with store.sessions() as s:
        envs = read_after(s, since, sub.names, 100_000)
    for _ in range(2 if twice else 1):
        for env in envs:
            assert apply(bus, sub, env, advance=False) == "done", bus.last_error(consumer)
    return envs


def handle_again(store, consumer: str, envs: list[Envelope]) -> None:
    """The handler itself once more on each event, past the bus's record of what it applied (at-least-once
    delivery without that record): it must change nothing."""
    sub = wired(consumer)
    with store.sessions() as s:
        for env in envs:
            sub.handler(s, env)
        s.commit()


def published(store, since: tuple[int, int], *names: str) -> list[Envelope]:
    """The events named ``names`` published after ``since``."""
    with store.sessions() as s:
        return read_after(s, since, set(names), 100_000)
