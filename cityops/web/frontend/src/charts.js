// Apache ECharts, loaded when a chart is first shown so the map and the phone page never wait for it.
let loading = null;

export function loadECharts() {
  if (!loading) loading = import("./charts-impl.js").then((m) => m.default);
  return loading;
}

export const CHART_TEXT = { color: "#cdd9e7", fontFamily: "system-ui, 'PingFang SC', 'Microsoft YaHei', sans-serif" };
