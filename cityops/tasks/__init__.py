"""任务中心 · 应急预案 · 转移安置: tasks decomposed level by level, emergency plans as data, risk zones and
household-by-household evacuation, from the warning to every household moved."""
