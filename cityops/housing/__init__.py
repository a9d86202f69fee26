"""房屋 · 住户 · 人口: buildings, households and residents — a first-class registry, and "who is threatened"."""
