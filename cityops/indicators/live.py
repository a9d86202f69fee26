"""Live indicators kept fresh while someone watches: the stream route asks ``refresh`` before each poll, and at most
every ``indicators_live_seconds`` one thread recomputes the live indicators (others go on reading). This is the
"compute on demand" of live values: no hook on other capabilities' writes."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import OperationalError

from cityops.indicators import service

log = logging.getLogger("cityops.indicators")


class LiveRefresher:
    def __init__(self, sessions, settings):
        self.sessions, self.settings = sessions, settings
        self.lock = threading.Lock()
        self.last = 0.0

    def refresh(self) -> bool:
        """Recompute the live indicators if they are older than the setting; False when someone else is at it."""
        if time.monotonic() - self.last < self.settings.indicators_live_seconds:
            return False
        if not self.lock.acquire(blocking=False):
            return False
        try:
            cat = service.load_catalogue(self.settings)
            live = {c for c, i in cat.indicators.items() if i.period == "live"}
            with self.sessions() as session:
                service.run(session, cat, "day", codes=live)
                session.commit()
            return True
        except OperationalError:  # SQLite busy with another writer: the next poll tries again
            log.warning("live indicators not refreshed: database busy")
            return False
        finally:
            self.last = time.monotonic()
            self.lock.release()
