"""The event bus (事件总线): capabilities meet through declared, typed domain events.

- ``events``: ``DomainEvent`` payloads, ``@event_type`` registry, ``Envelope``;
- ``manifest``: one ``Manifest`` per capability (publishes, consumes, depends_on);
- ``store``: the outbox tables and the backend differences of reading them in order;
- ``runtime``: ``publish(session, *events)`` and ``Bus`` (durable and broadcast subscriptions, in process);
- ``jetstream``: the NATS JetStream transport (relay, durable pull consumers, dead-letter subject).
"""

from cityops.core.bus.events import DomainEvent, Envelope, event_type
from cityops.core.bus.manifest import Manifest
from cityops.core.bus.runtime import Bus, Subscription, Timer, publish

__all__ = ["Bus", "DomainEvent", "Envelope", "Manifest", "Subscription", "Timer", "event_type", "publish"]
