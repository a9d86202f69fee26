"""The receipt boards' live fan-out in one worker: fed by the broadcast subscription ``directives.board_stream``
(every worker hears every ``directive.changed``), it hands each change to the streams of that directive whose
viewer's scope covers the change. Queues are bounded; a stream that falls behind is told (``overflow``) and
reloads its board."""

from __future__ import annotations

from cityops.core import sse
from cityops.core.bus import Envelope
from cityops.identity.scope import Scope


class DirectiveHub(sse.LiveHub):
    def subscribe(self, directive_id: int, scope: Scope):
        return super().subscribe((directive_id, scope))

    def unsubscribe(self, directive_id: int, sub) -> None:
        super().unsubscribe(sub)

    def publish(self, data: dict) -> None:
        receipt = data.get("receipt")

        # A receipt change goes to those who see that receipt; other changes make every board reload (it reads
        # only what its viewer covers).
        def wants(key) -> bool:
            directive_id, scope = key
            return directive_id == data["directive_id"] and (receipt is None or scope.covers(receipt.get("unit_path")))

        super().publish(data, wants, overflow={"event": "overflow", "directive_id": data["directive_id"]})


def board_stream(hub: DirectiveHub):
    """``directive.changed`` (broadcast, every worker) → the hub of this worker."""

    def listener(env: Envelope) -> None:
        hub.publish(env.payload.model_dump())

    return listener
