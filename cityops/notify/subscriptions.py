"""Notifications' own bus consumer: the live inbox of every worker and the dispatcher's wake-up (broadcast)."""

from __future__ import annotations

from cityops.core.bus import Envelope


def inbox_stream(hub, wake):
    """``notification.queued`` / ``notification.changed`` → this worker's inbox streams; a queued message also
    wakes the dispatcher (which works only in the lease holder)."""

    def handler(env: Envelope) -> None:
        hub.publish(env)
        if env.name == "notification.queued":
            wake()

    return handler
