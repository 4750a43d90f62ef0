// The evidence of an NC as a chart (uPlot): its readings around detection, those traced
// during verification, and the standard's limits as dashed lines, in the site's timezone. Data comes from the page
// (data-* attributes of #plot), so the page needs no inline script (the console's CSP
// forbids it), and every word on the chart comes from the page's language.
(function () {
  "use strict";
  function clock(tz) {
    var format = new Intl.DateTimeFormat("en-GB", {timeZone: tz, hour: "2-digit",
                                                    minute: "2-digit", hour12: false});
    return function (seconds) { return format.format(new Date(seconds * 1000)); };
  }
  // [[iso time, value]...] of each series on one time axis: null where a series has none
  function merged(lists) {
    var times = {};
    lists.forEach(function (list, i) {
      list.forEach(function (r) {
        var x = Date.parse(r[0]) / 1000;
        times[x] = times[x] || lists.map(function () { return null; });
        times[x][i] = r[1];
      });
    });
    var xs = Object.keys(times).map(Number).sort(function (a, b) { return a - b; });
    return [xs].concat(lists.map(function (_, i) {
      return xs.map(function (x) { return times[x][i]; });
    }));
  }
  function draw(box) {
    var readings = JSON.parse(box.dataset.readings || "[]");
    var verifying = JSON.parse(box.dataset.verifying || "[]");
    if ((!readings.length && !verifying.length) || typeof uPlot === "undefined") { return; }
    var at = clock(box.dataset.tz || "UTC");
    var data = merged([readings, verifying]);
    var xs = data[0];
    var series = [{label: box.dataset.timeLabel, value: function (u, v) { return v == null ? "" : at(v); }},
                  {label: box.dataset.label, stroke: "#0b6bcb", width: 2},
                  {label: box.dataset.verifyingLabel, stroke: "#067647", width: 2,
                   show: verifying.length > 0}];
    ["min", "max"].forEach(function (edge) {
      var v = box.dataset[edge];
      if (v !== undefined && v !== "") {
        data.push(xs.map(function () { return Number(v); }));
        series.push({label: box.dataset[edge + "Label"], stroke: "#b42318", dash: [6, 4],
                     width: 1, points: {show: false}});
      }
    });
    var axes = [{values: function (u, splits) { return splits.map(at); }}, {size: 50}];
    var plot = new uPlot({width: box.clientWidth, height: 220, series: series, axes: axes,
                          legend: {show: true}}, data, box);
    box.dataset.points = String(readings.length);
    box.dataset.verifyingPoints = String(verifying.length);
    window.addEventListener("resize", function () {
      plot.setSize({width: box.clientWidth, height: 220});
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("plot");
    if (box) { draw(box); }
  });
})();
