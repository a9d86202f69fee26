"""CSV for people to open: every CSV export writes its cells through here.

Spreadsheet programs (Excel, WPS, LibreOffice) take a cell that begins with ``=``, ``+``, ``-`` or ``@`` —
also after a leading tab or carriage return — as a formula, and a formula can run commands or send the
sheet's data away ("CSV injection", OWASP). Text we export comes from users (case titles, addresses, names,
layer attributes), so a text cell that begins with one of these characters is written with a leading
apostrophe, which the spreadsheet shows as text. Numbers stay numbers: a negative number is written as it
is (only ``str`` values are text).
"""

from __future__ import annotations

import csv
from typing import Any, Iterable

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value``, with a text value that a spreadsheet would run as a formula made inert."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


class Writer:
    """``csv.writer`` whose cells go through :func:`safe_cell`."""

    def __init__(self, handle, **options):
        self._writer = csv.writer(handle, **options)

    def writerow(self, row: Iterable[Any]):
        return self._writer.writerow([safe_cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


class DictWriter(csv.DictWriter):
    """``csv.DictWriter`` whose cells go through :func:`safe_cell` (the header is ours, written as is)."""

    def writerow(self, rowdict: dict):
        return super().writerow({k: safe_cell(v) for k, v in rowdict.items()})

    def writerows(self, rowdicts: Iterable[dict]) -> None:
        for row in rowdicts:
            self.writerow(row)
