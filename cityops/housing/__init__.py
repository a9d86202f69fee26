"""房屋 · 住户 · 人口: buildings, households and residents — a first-class registry, and "who is threatened"."""

from cityops.housing import demo as _demo  # noqa: E402,F401  (registers the "buildings" demo step)
