// The report page's duration chart: uPlot over the JSON the server embedded.
(function () {
  "use strict";
  var holder = document.getElementById("chart");
  var source = document.getElementById("chart-data");
  if (!holder || !source || typeof uPlot === "undefined") return;
  var data = JSON.parse(source.textContent);
  if (!data.x.length) return;
  function seconds(u, values) {
    return values.map(function (v) { return v == null ? "" : v < 10 ? v.toFixed(1) + " s" : v.toFixed(0) + " s"; });
  }
  var options = {
    width: holder.clientWidth,
    height: 300,
    tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },  // as the page: UTC
    scales: {
      // the whole window, whatever the data covers (one bucket alone would stretch to years)
      x: { time: true, range: function () { return [data.since, data.until]; } },
      y: { range: function (u, min, max) { return [0, max * 1.1 || 1]; } } },
    axes: [
      { stroke: "#667085", grid: { stroke: "#f0f2f5" } },
      { stroke: "#667085", grid: { stroke: "#f0f2f5" }, values: seconds, size: 60 },
    ],
    series: [
      { value: "{YYYY}-{MM}-{DD} {HH}:{mm}" },
      { label: "p50", stroke: "#2952cc", width: 2, fill: "rgba(41,82,204,0.08)", points: { show: data.x.length < 60 },
        value: function (u, v) { return v == null ? "–" : v.toFixed(2) + " s"; } },
      { label: "p95", stroke: "#d9480f", width: 2, dash: [6, 4], points: { show: data.x.length < 60 },
        value: function (u, v) { return v == null ? "–" : v.toFixed(2) + " s"; } },
    ],
  };
  var plot = new uPlot(options, [data.x, data.p50, data.p95], holder);
  window.addEventListener("resize", function () { plot.setSize({ width: holder.clientWidth, height: 300 }); });
})();
