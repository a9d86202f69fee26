"""A generated catalogue at the city's full scale — 8 sectors, 68 runways, 249 city sub-runways and a district's 104
local ones (353), two indicators each, townships running 22 — to prove the format and the engine carry it
(tests and ``benchmarks/indicators.py``). Indicators cycle through the platform metrics with varied parameters,
reported values and formulas, so every source kind and roll-up is exercised at that scale."""

from __future__ import annotations

from pathlib import Path

SECTORS = ("党建统领", "经济发展", "设施运行", "社会治理", "应急动员", "文明创建", "生态景观", "生产生活服务")
#: The levels of the benchmark's ~530 units (district, 40 townships, ~490 villages; grids are left out).
ALL_LEVELS = '["district", "township", "village"]'
TEMPLATES = [  # (metric source, rollup, scale, direction)
    ('{ kind = "metric", metric = "events.cases", params = { count = "open" } }', "sum", 1, "lower"),
    ('{ kind = "metric", metric = "events.cases", params = { count = "reported", class_prefix = "06" } }', "sum", 1, "lower"),
    ('{ kind = "metric", metric = "events.cases", params = { count = "overdue" } }', "sum", 1, "lower"),
    ('{ kind = "metric", metric = "events.cases", params = { count = "closed", class_prefix = "08" } }', "sum", 1, "higher"),
    ('{ kind = "metric", metric = "events.evaluation", params = { measure = "closure_rate" } }', "ratio", 100, "higher"),
    ('{ kind = "metric", metric = "events.evaluation", params = { measure = "ontime_closure_rate" } }', "ratio", 100, "higher"),
    ('{ kind = "metric", metric = "events.evaluation", params = { measure = "rework_rate" } }', "ratio", 100, "lower"),
    ('{ kind = "metric", metric = "sensing.alarms", params = { min_severity = "yellow" } }', "sum", 1, "lower"),
    ('{ kind = "metric", metric = "sensing.devices_online", params = { window_hours = 2 } }', "ratio", 100, "higher"),
    ('{ kind = "metric", metric = "sensing.reading_max", params = { device_type = "rain_gauge" } }', "worst", 1, "lower"),
    ('{ kind = "metric", metric = "warning.risk_points", params = { min_level = "blue" } }', "sum", 1, "lower"),
    ('{ kind = "metric", metric = "warning.risk_points", params = { min_level = "orange" } }', "sum", 1, "lower"),
    ('{ kind = "metric", metric = "housing.buildings", params = { grades = ["C", "D"] } }', "sum", 1, "lower"),
    ('{ kind = "metric", metric = "housing.buildings", params = { grades = ["D"], measure = "residents" } }', "sum", 1, "lower"),
    ('{ kind = "metric", metric = "tasks.evacuations", params = { states = ["to_move", "refused"] } }', "sum", 1, "lower"),
    ('{ kind = "metric", metric = "tasks.shelter_occupancy" }', "ratio", 100, "lower"),
    ('{ kind = "metric", metric = "tasks.overdue" }', "sum", 1, "lower"),
    ('{ kind = "metric", metric = "events.cases", params = { count = "open" } }', "mean", 1, "lower"),
]


def _indicator(code, sub, name, source, rollup, scale, direction, levels=ALL_LEVELS, period="daily"):
    bands = "{ yellow = 10, orange = 20, red = 40 }" if direction == "lower" else "{ yellow = 90, orange = 80, red = 60 }"
    return (f'\n[[indicator]]\ncode = "{code}"\nsubrunway = "{sub}"\nname_zh = "{name}"\nname_en = "{code}"\nunit = "项"\n'
            f'direction = "{direction}"\nperiod = "{period}"\nbands = {bands}\nlevels = {levels}\nrollup = "{rollup}"\n'
            f'scale = {scale}\nowner = "dept{len(code) % 17}"\nsource = {source}\n')


def write(directory: Path, *, runways: int = 68, city: int = 249, local: int = 104, township_subset: int = 22,
          townships: list[str] = ()) -> tuple[Path, list[Path]]:
    """Write the city pack and the district's files into ``directory``: (pack, [district files])."""
    directory.mkdir(parents=True, exist_ok=True)
    city_lines, district_lines = ["version = 1\n"], ["version = 1\n"]
    for s, name in enumerate(SECTORS, start=1):
        city_lines.append(f'\n[[sector]]\ncode = "G{s}"\nname_zh = "{name}"\nname_en = "Sector {s}"\nowner = "dept{s}"\n')
    for r in range(runways):
        city_lines.append(f'\n[[runway]]\ncode = "G{r % 8 + 1}R{r:02d}"\nsector = "G{r % 8 + 1}"\nname_zh = "跑道{r}"\n'
                          f'name_en = "Runway {r}"\nowner = "dept{r % 17}"\n')
    subs: list[str] = []
    for k in range(city + local):
        r = k % runways
        code = f"G{r % 8 + 1}R{r:02d}S{k:03d}"
        issued, lines = ("city", city_lines) if k < city else ("local", district_lines)
        lines.append(f'\n[[subrunway]]\ncode = "{code}"\nrunway = "G{r % 8 + 1}R{r:02d}"\nname_zh = "子跑道{k}"\n'
                     f'name_en = "Sub-runway {k}"\nowner = "dept{k % 17}"\nlevels = {ALL_LEVELS}\nissued = "{issued}"\n')
        subs.append(code)
        first = f"i{k:03d}a"
        source, rollup, scale, direction = TEMPLATES[k % len(TEMPLATES)]
        lines.append(_indicator(first, code, f"指标{k}甲", source, rollup, scale, direction,
                                period="live" if k % 3 == 0 else "daily"))
        if k % 5 == 4:  # a reported value, kept by district and townships
            lines.append(_indicator(f"i{k:03d}b", code, f"指标{k}乙", '{ kind = "reported" }', "sum", 1, "higher",
                                    levels='["district", "township"]'))
        elif k % 5 == 2 and k >= 2:  # a formula over this sub-runway's first indicator and an earlier one
            lines.append(_indicator(f"i{k:03d}b", code, f"指标{k}乙",
                                    f'{{ kind = "formula", expr = "i{k:03d}a + i{k - 1:03d}a * 2" }}', "formula", 1, "lower",
                                    levels='["district", "township", "village"]'))
        else:
            source, rollup, scale, direction = TEMPLATES[(k * 7 + 3) % len(TEMPLATES)]
            lines.append(_indicator(f"i{k:03d}b", code, f"指标{k}乙", source, rollup, scale, direction))
    for t, township in enumerate(townships):
        picked = [subs[(t * 5 + j * 16) % len(subs)] for j in range(township_subset)]
        district_lines.append(f'\n[[township]]\ncode = "{township}"\nsubrunways = {picked!r}\n'.replace("'", '"'))
    pack = directory / "city.toml"
    pack.write_text("".join(city_lines), encoding="utf-8")
    district = directory / "district" / "local.toml"
    district.parent.mkdir(exist_ok=True)
    district.write_text("".join(district_lines), encoding="utf-8")
    return pack, [district]
