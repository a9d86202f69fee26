"""A worker process for the bus tests: one durable consumer (``c``) that records each event it applies in
``testbus_applied``; runs until killed. ``python -m tests.bus_worker '<settings as JSON>'``"""

from __future__ import annotations

import json
import sys
import time

from cityops.core.bus import Bus, Subscription
from cityops.core.db import make_engine
from cityops.core.settings import Settings
from tests.test_bus import Counted, _record

if __name__ == "__main__":
    settings = Settings(**json.loads(sys.argv[1]))
    record = _record("c")

    def slow(session, env):  # a little work per event, so that a kill lands in the middle of the stream
        time.sleep(0.002)
        record(session, env)

    bus = Bus(make_engine(settings), settings)
    bus.subscribe(Subscription("c", (Counted,), slow, ordered=False))
    bus.start()
    print("ready", flush=True)
    while True:
        time.sleep(1)
