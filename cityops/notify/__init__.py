"""Notifications with receipts (通知 · 回执 · 升级): see service.py for the public API."""

from cityops.notify import demo as _demo  # noqa: E402,F401  (registers the "notify" demo step)
