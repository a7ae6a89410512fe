// Axis ticks and their labels for the charts of the peftbench report. Pure functions, no DOM:
// html_report.py inlines this file before report.js, and tests/analysis/test_report_axes.py runs
// it under node. Cells come formatted from Python; only axis ticks are formatted here.
var peftbenchAxes = (function () {
  "use strict";

  // ---------------------------------------------------------------- number formats
  // `v` as a tick label with `digits` significant digits in the label's unit.
  function tickText(fmt, v, digits) {
    var p = digits || 3;
    var a = Math.abs(v);
    if (fmt === "pct") return trim(v * 100, p) + "%";
    if (fmt === "bytes") {
      var units = [["GiB", 1073741824], ["MiB", 1048576], ["KiB", 1024]];
      for (var i = 0; i < units.length; i++) if (a >= units[i][1]) return trim(v / units[i][1], p) + " " + units[i][0];
      return trim(v, p) + " B";
    }
    if (fmt === "seconds") {
      if (a >= 3600) return trim(v / 3600, p) + " h";
      if (a >= 60) return trim(v / 60, p) + " min";
      return trim(v, p) + " s";
    }
    if (fmt === "count" || fmt === "rate") {
      var sizes = [["B", 1e9], ["M", 1e6], ["k", 1e3]];
      for (var j = 0; j < sizes.length; j++) if (a >= sizes[j][1]) return trim(v / sizes[j][1], p) + sizes[j][0];
      return trim(v, p);
    }
    return trim(v, p);
  }
  // Number() drops the zeros toPrecision pads with ("50.0" -> 50) and no other digit: 100 stays 100.
  function trim(v, digits) { return Number(v.toPrecision(digits)).toString(); }

  // The labels of one axis: three significant digits, more where neighbouring ticks would read
  // alike (504.1 and 504.15 MiB are both "504 MiB" with three).
  function tickLabels(fmt, ticks) {
    for (var digits = 3; digits <= 12; digits++) {
      var labels = ticks.map(function (t) { return tickText(fmt, t, digits); });
      if (labels.every(function (label, i) { return i === 0 || label !== labels[i - 1]; })) return labels;
    }
    return labels;
  }

  // ---------------------------------------------------------------- scales
  // About `count` ticks at round steps covering [lo, hi], inside [floor, ceil]. A single value
  // gets a span around it that stays inside those bounds: accuracies that are all 0 span 0..100%,
  // never -100..100%.
  function niceTicks(lo, hi, count, floor, ceil) {
    if (!(hi > lo)) {
      var pad = Math.abs(lo) * 0.1 || 1;
      lo = Math.max(lo - pad, floor === undefined ? -Infinity : floor);
      hi = Math.min(hi + pad, ceil === undefined ? Infinity : ceil);
      if (!(hi > lo)) hi = lo + pad; // a value at the ceiling: pad below it instead
      if (!(hi > lo)) lo = hi - pad;
    }
    var raw = (hi - lo) / count;
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 2.5, 5, 10].map(function (m) { return m * mag; }).find(function (s) { return s >= raw; });
    var start = Math.floor(lo / step) * step, end = Math.ceil(hi / step) * step;
    var ticks = [];
    for (var t = start; t <= end + step / 2; t += step) ticks.push(Number(t.toPrecision(12)));
    return ticks;
  }
  function logTicks(lo, hi) {
    var ticks = [];
    for (var e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) ticks.push(Math.pow(10, e));
    return ticks;
  }
  // Linear ticks are "nice" in the unit the labels use (20 GiB, not 21.5 GiB = 2e10 bytes).
  function tickUnit(fmt, hi) {
    var units = fmt === "bytes" ? [1073741824, 1048576, 1024] : fmt === "seconds" ? [3600, 60] : [];
    var min = fmt === "seconds" ? 2 : 1; // below 2 h, minutes read better than 1.5 h
    for (var i = 0; i < units.length; i++) if (Math.abs(hi) >= min * units[i]) return units[i];
    return 1;
  }
  // Values -> pixels, and the ticks. Every column the report plots is >= 0, and a share (pct)
  // lies in [0, 1]: the padding of a single value does not leave those ranges.
  function scale(values, log, fmt, pixelLo, pixelHi) {
    var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
    var unit = tickUnit(fmt, hi);
    var floor = lo >= 0 ? 0 : undefined, ceil = fmt === "pct" && hi <= 1 ? 1 : undefined;
    var ticks = log ? logTicks(lo, hi) : niceTicks(lo / unit, hi / unit, 5, floor, ceil === undefined ? undefined : ceil / unit)
      .map(function (t) { return t * unit; });
    var dlo = ticks[0], dhi = ticks[ticks.length - 1];
    var f = log ? Math.log10 : function (v) { return v; };
    var a = f(dlo), b = f(dhi);
    var map = function (v) { return pixelLo + (f(v) - a) / ((b - a) || 1) * (pixelHi - pixelLo); };
    return { map: map, ticks: ticks };
  }

  var api = { tickText: tickText, tickLabels: tickLabels, niceTicks: niceTicks, logTicks: logTicks, scale: scale };
  if (typeof module !== "undefined" && module.exports) module.exports = api; // node, for the tests
  return api;
})();
