"""Who performs a write (``audit.Actor``): in a module of its own, so that a writer that records its audit entry in
Core (``cityops import-layer``) names its actor without importing the audit log's ORM model."""

from __future__ import annotations


class Actor:
    """Who performs a write: a user, or the system (CLI, generator, migration)."""

    def __init__(self, name: str, user_id: int | None = None, request_id: str | None = None):
        self.name = name
        self.user_id = user_id
        self.request_id = request_id


SYSTEM = Actor("system")
