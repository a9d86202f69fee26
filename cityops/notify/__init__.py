"""Notifications with receipts (通知 · 回执 · 升级): see service.py for the public API."""
