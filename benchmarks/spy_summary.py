"""Where the samples of a py-spy profile went: the shares docs/benchmarks.md quotes.

    .venv/bin/python benchmarks/spy_summary.py FILE [--top 25] [--match NAME ...]

FILE holds collapsed stacks as ``py-spy record -f raw`` writes them (one line per stack: frames separated by
``;``, then the sample count). Prints the share of all samples by thread (the first frame, with
``--threads``), the functions with the most samples of their own (the innermost frame), and, for each
``--match`` (a substring of a frame, e.g. ``insert_drafts`` or ``locate_many``), the share of samples whose stack
holds it (inclusive).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_FRAME = re.compile(r"^(?P<func>[^ (]+) \((?P<file>[^:]*):?(?P<line>\d*)\)$")


def load(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    pending = ""  # a stack whose process name spans lines (``python -c "…"`` with --subprocesses)
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = pending + line.rstrip("\n")
            if not line:
                continue
            frames, _, count = line.rpartition(" ")
            if not count.isdigit():
                pending = line + " "
                continue
            pending = ""
            stacks.append((frames.split(";"), int(count)))
    return stacks


def short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m["file"].rsplit("/", 2)
    return f"{m['func']} ({'/'.join(file[-2:])})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--match", action="append", default=[])
    args = ap.parse_args()
    stacks = load(args.file)
    total = sum(n for _, n in stacks) or 1
    own: Counter = Counter()
    for frames, n in stacks:
        own[short(frames[-1])] += n
    print(f"{total} samples")
    print("\nown samples (innermost frame)")
    for name, n in own.most_common(args.top):
        print(f"{100 * n / total:6.1f} %  {name}")
    if args.match:
        print("\ninclusive (a frame containing the text)")
        for text in args.match:
            n = sum(c for frames, c in stacks if any(text in f for f in frames))
            print(f"{100 * n / total:6.1f} %  {text}")


if __name__ == "__main__":
    main()
