"""任务中心 · 应急预案 · 转移安置: tasks decomposed level by level, emergency plans as data, risk zones and
household-by-household evacuation, from the warning to every household moved."""

from cityops.tasks import demo as _demo  # noqa: E402,F401  (registers the "shelters" demo step)
