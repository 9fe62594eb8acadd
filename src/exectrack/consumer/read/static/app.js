// The report page's duration chart: uPlot over the JSON the server embedded.
(function () {
  "use strict";
  var holder = document.getElementById("chart");
  var source = document.getElementById("chart-data");
  if (!holder || !source || typeof uPlot === "undefined") return;
  var data = JSON.parse(source.textContent);
  if (!data.x.length) return;
  // a duration in seconds, short enough for an axis label: 4.2 s, 12 min, 3.5 h, 12 d, 2.9e+8 y
  function short(v) {
    if (v == null) return "";
    var units = [[31536000, " y"], [86400, " d"], [3600, " h"], [60, " min"]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(v) >= units[i][0]) {
        var n = v / units[i][0];
        return (n >= 1e4 ? n.toExponential(1) : n < 10 ? n.toFixed(1) : n.toFixed(0)) + units[i][1];
      }
    }
    return (v < 10 ? v.toFixed(1) : v.toFixed(0)) + " s";
  }
  function seconds(u, values) { return values.map(short); }
  // x ticks in UTC, ISO-like and 24 h, as the rest of the page: "11-30 14:00", "14:30"
  var span = data.until - data.since;
  function utc(u, values) {
    return values.map(function (t) {
      var iso = new Date(t * 1000).toISOString();
      return span > 86400 ? iso.slice(5, 10) + " " + iso.slice(11, 16) : iso.slice(11, 16);
    });
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
      { stroke: "#667085", grid: { stroke: "#f0f2f5" }, values: utc },
      { stroke: "#667085", grid: { stroke: "#f0f2f5" }, values: seconds, size: 72 },
    ],
    series: [
      { value: "{YYYY}-{MM}-{DD} {HH}:{mm} UTC" },
      { label: "p50", stroke: "#2952cc", width: 2, fill: "rgba(41,82,204,0.08)", points: { show: data.x.length < 60 },
        value: function (u, v) { return v == null ? "–" : v < 60 ? v.toFixed(2) + " s" : short(v); } },
      { label: "p95", stroke: "#d9480f", width: 2, dash: [6, 4], points: { show: data.x.length < 60 },
        value: function (u, v) { return v == null ? "–" : v < 60 ? v.toFixed(2) + " s" : short(v); } },
    ],
  };
  var plot = new uPlot(options, [data.x, data.p50, data.p95], holder);
  window.addEventListener("resize", function () { plot.setSize({ width: holder.clientWidth, height: 300 }); });
})();
