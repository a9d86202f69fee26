"""风险预警 early warning: published warning models, risk points (风险点位) and their levels, CAP 1.2 feed."""
