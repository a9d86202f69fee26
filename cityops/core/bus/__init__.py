"""The event bus (事件总线): capabilities meet through declared, typed domain events.

- ``events``: ``DomainEvent`` payloads, ``@event_type`` registry, ``Envelope``;
- ``manifest``: one ``Manifest`` per capability (publishes, consumes, depends_on);
- ``store``: the outbox tables and the backend differences of reading them in order;
- ``runtime``: ``publish(session, *events)`` and ``Bus`` (durable and broadcast subscriptions, in process);
- ``jetstream``: the NATS JetStream transport (relay, durable pull consumers, dead-letter subject).
"""

from cityops.core.bus.events import DomainEvent, Envelope, event_type
from cityops.core.bus.manifest import Manifest

#: Loaded when first used: the runtime brings the outbox's tables and SQLAlchemy's ORM, which a process that only
#: declares or checks events (the capabilities' manifests, the catalogue check of ``cityops import-layer``) never needs.
_RUNTIME = ("Bus", "Subscription", "Timer", "publish")


def __getattr__(name: str):
    if name in _RUNTIME:
        from cityops.core.bus import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Bus", "DomainEvent", "Envelope", "Manifest", "Subscription", "Timer", "event_type", "publish"]
