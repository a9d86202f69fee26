"""One row per measured target, shared by every benchmark script and read back by ``benchmarks/run_all.py``.

A script calls :func:`record` once per target it measures. When run by ``run_all.py`` (``make bench``), the rows are
appended as JSON lines to the file named by ``CITYOPS_BENCH_RESULTS`` and the summary table is printed from them; run
on its own, a script prints its own tables as before and ``record`` does nothing.

Each row says what was measured (``work``), our figure, the peer's or raw limit's figure measured in the same run,
the ratio the target is stated on (``ratio``, with ``unit`` saying which way it reads), the target as written, and
whether it is met. Where a peer or limit exists the target is the ratio, so a slower machine does not turn a met
target into a missed one.
"""

from __future__ import annotations

import json
import os
import sys

ENV = "CITYOPS_BENCH_RESULTS"


def record(work: str, ours: str, peer: str = "", ratio: float | None = None, target: str = "", met: bool | None = None,
           *, script: str | None = None, note: str = "") -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    row = {"script": script or os.path.basename(sys.argv[0]), "work": work, "ours": ours, "peer": peer,
           "ratio": None if ratio is None else float(ratio), "target": target,
           "met": None if met is None else bool(met), "note": note}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
