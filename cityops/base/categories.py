"""The layer category tree (图层目录分类) of the digital base (``categories.toml``), validated on load.

Two levels: 12 major categories (大类, 2-digit codes "01".."12") and their minor categories (小类, 4-digit
codes that start with the major's code, e.g. "0302" 地质灾害隐患点 under "03" 地质). Every GIS layer in the
catalogue is filed under one minor category.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cityops.core.errors import InvalidInput

CATEGORIES_FILE = Path(__file__).with_name("categories.toml")

SUPPORTED_VERSIONS = (1,)
GEOMETRY_HINTS = ("point", "line", "polygon", "any")
LANGUAGES = ("zh-CN", "en")

_MAJOR_CODE = re.compile(r"^[0-9]{2}$")
_MINOR_CODE = re.compile(r"^[0-9]{4}$")


@dataclass(frozen=True)
class Category:
    code: str
    name_zh: str
    name_en: str
    #: The major category's code for a minor; ``None`` for a major.
    parent: str | None
    #: Geometry hint for layers in this category ("point", "line", "polygon", "any"); ``None`` if unstated.
    geometry: str | None
    description_zh: str = ""
    description_en: str = ""

    @property
    def is_major(self) -> bool:
        return self.parent is None

    def name(self, language: str = "zh-CN") -> str:
        return self.name_en if _language(language) == "en" else self.name_zh


def _language(language: str) -> str:
    if language not in LANGUAGES:
        raise InvalidInput(f"unsupported language {language!r}; use one of: {', '.join(LANGUAGES)}")
    return language


class CategoryTree:
    def __init__(self, categories: list[Category], source: Path | str = CATEGORIES_FILE):
        self.source = Path(source)
        self._by_code: dict[str, Category] = {c.code: c for c in categories}
        self._majors: list[Category] = [c for c in categories if c.parent is None]
        self._minors: dict[str, list[Category]] = {m.code: [] for m in self._majors}
        for c in categories:
            if c.parent is not None:
                self._minors[c.parent].append(c)

    def get(self, code: str) -> Category:
        try:
            return self._by_code[code]
        except (KeyError, TypeError):
            raise InvalidInput(
                f"unknown layer category code {code!r}; major codes are {', '.join(self._major_codes())}"
                " (2 digits) and minor codes are 4 digits starting with their major's code; list all codes"
                f" with load_categories().to_tree() or see {self.source.name}",
                details={"code": code},
            ) from None

    def _major_codes(self) -> list[str]:
        return [m.code for m in self._majors]

    def majors(self) -> list[Category]:
        return list(self._majors)

    def minors(self, major: str | None = None) -> list[Category]:
        if major is None:
            return [c for m in self._majors for c in self._minors[m.code]]
        category = self.get(major)
        if category.parent is not None:
            raise InvalidInput(
                f"{major!r} is a minor layer category, not a major one; major codes are"
                f" {', '.join(self._major_codes())}",
                details={"code": major},
            )
        return list(self._minors[major])

    def to_tree(self, language: str = "zh-CN") -> list[dict[str, Any]]:
        """``[{"code", "name", "children": [{"code", "name", "geometry", "children": []}, ...]}, ...]``."""
        language = _language(language)
        return [
            {
                "code": major.code,
                "name": major.name(language),
                "description": major.description_en if language == "en" else major.description_zh,
                "children": [
                    {"code": m.code, "name": m.name(language), "geometry": m.geometry, "children": []}
                    for m in self._minors[major.code]
                ],
            }
            for major in self._majors
        ]

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and code in self._by_code

    def __len__(self) -> int:
        return len(self._by_code)

    def __iter__(self):
        for major in self._majors:
            yield major
            yield from self._minors[major.code]


def _text(entry: dict, key: str, what: str, path: Path, required: bool = True) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{path}: {what} has a non-string {key} {value!r}")
    value = value.strip()
    if required and not value:
        raise ValueError(f"{path}: {what} is missing {key}")
    return value


def _parse(data: dict, path: Path) -> list[Category]:
    version = data.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"{path}: unsupported layer category file version {version!r};"
            f" supported: {', '.join(map(str, SUPPORTED_VERSIONS))}"
        )
    majors = data.get("majors")
    if not isinstance(majors, list) or not majors:
        raise ValueError(f"{path}: no [[majors]] defined")

    categories: list[Category] = []
    seen: set[str] = set()

    def check_code(code: Any, pattern: re.Pattern, what: str, digits: int) -> str:
        if not isinstance(code, str) or not pattern.match(code):
            raise ValueError(f"{path}: {what} has code {code!r}; expected exactly {digits} digits as a string")
        if code in seen:
            raise ValueError(f"{path}: duplicate category code {code!r}")
        seen.add(code)
        return code

    for i, major in enumerate(majors, start=1):
        if not isinstance(major, dict):
            raise ValueError(f"{path}: major #{i} is not a table")
        code = check_code(major.get("code"), _MAJOR_CODE, f"major #{i}", 2)
        what = f"major {code}"
        categories.append(
            Category(
                code=code,
                name_zh=_text(major, "name_zh", what, path),
                name_en=_text(major, "name_en", what, path),
                parent=None,
                geometry=None,
                description_zh=_text(major, "description_zh", what, path, required=False),
                description_en=_text(major, "description_en", what, path, required=False),
            )
        )
        minors = major.get("minors", [])
        if not isinstance(minors, list) or not minors:
            raise ValueError(f"{path}: major {code} has no minor categories; each major needs at least 1")
        for j, minor in enumerate(minors, start=1):
            if not isinstance(minor, dict):
                raise ValueError(f"{path}: minor #{j} of major {code} is not a table")
            mcode = minor.get("code")
            check_code(mcode, _MINOR_CODE, f"minor #{j} of major {code}", 4)
            if not mcode.startswith(code):
                raise ValueError(f"{path}: minor code {mcode!r} does not start with its major's code {code!r}")
            mwhat = f"minor {mcode}"
            geometry = minor.get("geometry")
            if geometry is not None and geometry not in GEOMETRY_HINTS:
                raise ValueError(
                    f"{path}: {mwhat} has unknown geometry hint {geometry!r}; use one of {', '.join(GEOMETRY_HINTS)}"
                )
            categories.append(
                Category(
                    code=mcode,
                    name_zh=_text(minor, "name_zh", mwhat, path),
                    name_en=_text(minor, "name_en", mwhat, path),
                    parent=code,
                    geometry=geometry,
                )
            )
    return categories


@lru_cache(maxsize=8)
def load_categories(path: Path = CATEGORIES_FILE) -> CategoryTree:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    return CategoryTree(_parse(data, path), source=path)
