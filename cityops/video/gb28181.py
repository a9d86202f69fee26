"""The GB/T 28181 20-digit device code (统一编码): parsing and validation against the catalogue (gb28181.toml).

A malformed code is refused with a message that names the part at fault (center code, industry, type, serial),
so an operator can correct the one field of the device's label that is wrong.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from cityops.core.errors import InvalidInput

CATALOGUE = Path(__file__).with_name("gb28181.toml")


class Named(BaseModel):
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)


class Catalogue(BaseModel):
    version: int
    provinces: list[str]
    camera_types: list[str]
    industries: dict[str, Named]
    types: dict[str, Named]
    networks: dict[str, Named]

    @field_validator("provinces")
    @classmethod
    def _two_digits(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if len(p) != 2 or not p.isdigit()]
        if bad:
            raise ValueError(f"province codes must be two digits: {bad}")
        return v

    def check(self) -> "Catalogue":
        problems = []
        problems += [f"industry {k!r} is not two digits" for k in self.industries if len(k) != 2 or not k.isdigit()]
        problems += [f"type {k!r} is not three digits" for k in self.types if len(k) != 3 or not k.isdigit()]
        problems += [f"camera type {k!r} is not in [types]" for k in self.camera_types if k not in self.types]
        if sorted(self.networks) != [str(d) for d in range(10)]:
            problems.append("[networks] must name each digit 0–9")
        if problems:
            raise ValueError("gb28181.toml: " + "; ".join(problems))
        return self


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    with CATALOGUE.open("rb") as f:
        return Catalogue.model_validate(tomllib.load(f)).check()


@dataclass(frozen=True)
class DeviceCode:
    code: str
    center: str      # 8 digits: province, city, county, basic access unit
    industry: str    # 2 digits
    type_code: str   # 3 digits
    serial: str      # 7 digits; serial[0] is the network identifier

    @property
    def county(self) -> str:
        return self.center[:6]

    def describe(self) -> dict:
        cat = catalogue()
        industry = cat.industries.get(self.industry)
        kind = cat.types[self.type_code]
        network = cat.networks[self.serial[0]]
        return {"center_code": self.center, "industry_code": self.industry,
                "industry_name_zh": industry.name_zh if industry else "其他行业",
                "industry_name_en": industry.name_en if industry else "Other industry",
                "type_code": self.type_code, "type_name_zh": kind.name_zh, "type_name_en": kind.name_en,
                "serial": self.serial, "network_name_zh": network.name_zh, "network_name_en": network.name_en}


def parse(code: str, *, camera: bool = True) -> DeviceCode:
    """Split and check a 20-digit code; ``camera`` also requires a camera type code (131 or 132)."""
    cat = catalogue()
    if not isinstance(code, str) or len(code) != 20 or not code.isdigit():
        shown = code if isinstance(code, str) and len(code) <= 40 else "…"
        raise InvalidInput(f"GB/T 28181 code {shown!r} must be exactly 20 digits "
                           f"(8 center + 2 industry + 3 type + 7 serial), got {len(code) if isinstance(code, str) else 0} characters",
                           details={"part": "length"})
    dc = DeviceCode(code, code[:8], code[8:10], code[10:13], code[13:20])
    if dc.center[:2] not in cat.provinces:
        raise InvalidInput(f"GB/T 28181 code {code}: center code {dc.center} (digits 1–8) starts with {dc.center[:2]}, "
                           "which is not a province code of GB/T 2260", details={"part": "center_code"})
    if dc.center[2:4] == "00" and dc.center[4:6] != "00":
        raise InvalidInput(f"GB/T 28181 code {code}: center code {dc.center} (digits 1–8) names a county without its city "
                           "(digits 3–4 are 00)", details={"part": "center_code"})
    if dc.type_code not in cat.types:
        raise InvalidInput(f"GB/T 28181 code {code}: type code {dc.type_code} (digits 11–13) is not a device type of GB/T 28181",
                           details={"part": "type_code"})
    if camera and dc.type_code not in cat.camera_types:
        raise InvalidInput(f"GB/T 28181 code {code}: type code {dc.type_code} (digits 11–13) is a "
                           f"{cat.types[dc.type_code].name_en} ({cat.types[dc.type_code].name_zh}), not a camera "
                           f"({' or '.join(cat.camera_types)})", details={"part": "type_code"})
    return dc


def make(center: str, industry: str, type_code: str, serial: int, network: int = 6) -> str:
    """A code from its parts (the demo's cameras; ``network`` 6 = 政务网)."""
    return parse(f"{center}{industry}{type_code}{network}{serial:06d}").code
