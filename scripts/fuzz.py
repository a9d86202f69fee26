"""The full-budget API fuzzer: schemathesis over /api, /ogc, /sta/v1.1 and /open311/v2 of a fresh demo district,
on each backend asked for. The suite runs the same fuzzer with a small budget (tests/test_fuzz.py).

    .venv/bin/python scripts/fuzz.py [--examples 25] [--seed 17] [--backend sqlite --backend postgis]

Prints one row per backend (operations, cases, seconds, answers by status, failures) and each failure with
how to reproduce it; exits 1 when there is any. Figures: docs/hardening.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import fuzzing  # noqa: E402
from tests.conftest import SMALL_DEMO, make_client, make_store  # noqa: E402


def main(examples: int = typer.Option(25, help="valid and as many invalid cases per operation"),
         seed: int = typer.Option(17), backend: list[str] = typer.Option(["sqlite", "postgis"])) -> None:
    from cityops.demo.generator import build_demo

    console = Console(width=200)
    table = Table("backend", "operations", "cases", "seconds", "cases/s", "answers by status", "failures")
    failed = False
    for name in backend:
        with tempfile.TemporaryDirectory(prefix="cityops-fuzz-") as tmp:
            store, close = make_store(name, Path(tmp) / "data")
            try:
                build_demo(store.sessions, store.org, SMALL_DEMO)
                client = make_client(store)
                started = time.monotonic()
                report = fuzzing.run(client.app, client.login("admin"), examples=examples, seed_value=seed)
                client.close()
            finally:
                close()
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(report.statuses.items(), key=lambda kv: str(kv[0])))
        table.add_row(name, str(report.operations), str(report.cases), f"{report.seconds:.0f}",
                      f"{report.cases / max(report.seconds, 1e-9):.1f}", statuses, str(len(report.failures)))
        for (method, path), why in report.failures.items():
            failed = True
            console.print(f"[red]{name}: {method} {path}[/red]\n{why}\n")
        console.print(f"{name}: done in {time.monotonic() - started:.0f} s")
    console.print(table)
    console.print(f"examples={examples} seed={seed} load average={' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    raise typer.Exit(1 if failed else 0)


if __name__ == "__main__":
    typer.run(main)
