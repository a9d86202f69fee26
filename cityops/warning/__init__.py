"""风险预警 early warning: published warning models, risk points (风险点位) and their levels, CAP 1.2 feed."""

from cityops.warning import demo as _demo  # noqa: E402,F401  (registers the "risk_points" demo step)
