"""Structured JSON logs (one object per line) for every process: API server, CLI, workers."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO", json_output: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_output:
        from pythonjsonlogger.json import JsonFormatter  # only for JSON logs (CITYOPS_LOG_JSON=false: plain lines)

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.INFO))
