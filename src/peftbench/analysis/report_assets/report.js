// Draws the peftbench report from the JSON block #peftbench-data (built by peftbench/report.py).
// Every string from a result file reaches the page through textContent or setAttribute, never
// innerHTML: experiment names and error messages are data, not markup.
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("peftbench-data").textContent);
  var SVG_NS = "http://www.w3.org/2000/svg";
  var rows = data.rows;
  var ranked = rows.filter(function (r) { return r.values.ranked; });
  var failures = rows.filter(function (r) { return !r.values.ranked; });

  // ---------------------------------------------------------------- small DOM helpers
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    setAttrs(node, attrs);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function setAttrs(node, attrs) {
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function label(col) { return data.columns[col].label; }
  function isNumeric(col) { return ["text", "bool"].indexOf(data.columns[col].fmt) < 0; }
  function colour(family) { return data.families[family] || "#888888"; }

  // ---------------------------------------------------------------- axes (axes.js, inlined before this script)
  var scale = peftbenchAxes.scale, tickLabels = peftbenchAxes.tickLabels;

  // A chart frame: axes, grid, tick labels and axis titles; returns the svg and both scales.
  function frame(opts) {
    var W = opts.width, H = opts.height, m = { l: 64, r: 14, t: 12, b: 42 };
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": opts.title });
    var sx = scale(opts.xs, opts.logX, opts.xfmt, m.l, W - m.r);
    var sy = scale(opts.ys, opts.logY, opts.yfmt, H - m.b, m.t);
    var xLabels = tickLabels(opts.xfmt, sx.ticks), yLabels = tickLabels(opts.yfmt, sy.ticks);
    sx.ticks.forEach(function (t, i) {
      var x = sx.map(t);
      root.appendChild(svg("line", { x1: x, x2: x, y1: m.t, y2: H - m.b, "class": "grid" }));
      root.appendChild(svg("text", { x: x, y: H - m.b + 14, "text-anchor": "middle" }, xLabels[i]));
    });
    sy.ticks.forEach(function (t, i) {
      var y = sy.map(t);
      root.appendChild(svg("line", { x1: m.l, x2: W - m.r, y1: y, y2: y, "class": "grid" }));
      root.appendChild(svg("text", { x: m.l - 6, y: y + 4, "text-anchor": "end" }, yLabels[i]));
    });
    root.appendChild(svg("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, "class": "axis" }));
    root.appendChild(svg("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, "class": "axis" }));
    root.appendChild(svg("text", { x: (m.l + W - m.r) / 2, y: H - 6, "text-anchor": "middle", "class": "axis-label" }, opts.xlabel));
    root.appendChild(svg("text", { x: 14, y: (m.t + H - m.b) / 2, "text-anchor": "middle", "class": "axis-label",
      transform: "rotate(-90 14 " + (m.t + H - m.b) / 2 + ")" }, opts.ylabel));
    return { root: root, sx: sx, sy: sy };
  }
  function emptyPlot(width, height, message) {
    var root = svg("svg", { viewBox: "0 0 " + width + " " + height, width: width, height: height });
    root.appendChild(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", "class": "empty" }, message));
    return root;
  }

  // ---------------------------------------------------------------- tooltip
  var tooltip = document.getElementById("tooltip");
  function showTip(event, lines) {
    tooltip.textContent = lines.join("\n");
    tooltip.hidden = false;
    moveTip(event);
  }
  function moveTip(event) {
    tooltip.style.left = Math.min(event.clientX + 14, window.innerWidth - 430) + "px";
    tooltip.style.top = (event.clientY + 14) + "px";
  }
  function hideTip() { tooltip.hidden = true; }

  // ---------------------------------------------------------------- leaderboard
  var sortState = { col: "test_acc", desc: true };
  var maxHi = Math.max.apply(null, ranked.map(function (r) { return r.values.test_acc_hi || 0; }).concat([0.01]));

  function intervalBar(v) {
    var W = 70, H = 10, f = function (x) { return 1 + (x / maxHi) * (W - 2); };
    var bar = svg("svg", { width: W, height: H, "class": "ci-bar", "aria-hidden": "true" });
    if (v.test_acc_lo !== null && v.test_acc_hi !== null) {
      bar.appendChild(svg("line", { x1: f(v.test_acc_lo), x2: f(v.test_acc_hi), y1: H / 2, y2: H / 2, stroke: "#7a8599", "stroke-width": 2 }));
    }
    bar.appendChild(svg("circle", { cx: f(v.test_acc), cy: H / 2, r: 2.6, fill: colour(v.family) }));
    return bar;
  }

  function compareValues(a, b, col, desc) {
    var x = a.values[col], y = b.values[col];
    var missX = x === null || x === undefined, missY = y === null || y === undefined;
    if (missX || missY) return missX === missY ? 0 : (missX ? 1 : -1); // missing always last
    if (typeof x === "string") { var c = x.localeCompare(y); return desc ? -c : c; }
    if (typeof x === "boolean") { x = x ? 1 : 0; y = y ? 1 : 0; }
    return desc ? y - x : x - y;
  }

  function renderTable() {
    var table = document.getElementById("leaderboard-table");
    clear(table);
    var cols = data.table_columns;
    var head = el("thead"), tr = el("tr");
    tr.appendChild(el("th", { "class": "num", title: "rank by test accuracy" }, "#"));
    cols.forEach(function (col) {
      var th = el("th", { "class": isNumeric(col) ? "num" : "", title: data.columns[col].help, "data-col": col, scope: "col" },
        col === "test_acc" ? "test acc % [95% CI]" : label(col));
      if (sortState.col === col) th.setAttribute("aria-sort", sortState.desc ? "descending" : "ascending");
      th.addEventListener("click", function () {
        var col2 = th.getAttribute("data-col");
        if (sortState.col === col2) sortState.desc = !sortState.desc;
        else { sortState.col = col2; sortState.desc = data.columns[col2].direction === "higher"; }
        renderTable();
      });
      tr.appendChild(th);
    });
    head.appendChild(tr);
    table.appendChild(head);

    var rank = {};
    ranked.slice().sort(function (a, b) { return compareValues(a, b, "test_acc", true); })
      .forEach(function (r, i) { rank[r.id] = i + 1; });
    var body = el("tbody");
    ranked.slice().sort(function (a, b) { return compareValues(a, b, sortState.col, sortState.desc) || rank[a.id] - rank[b.id]; })
      .forEach(function (r) {
        var row = el("tr", { "class": r.values.near_best ? "near-best" : "", "data-experiment": r.values.experiment });
        row.appendChild(el("td", { "class": "num" }, rank[r.id]));
        cols.forEach(function (col) {
          var td = el("td", { "class": isNumeric(col) ? "num" : "" });
          if (col === "family") {
            td.appendChild(el("span", { "class": "swatch", style: "background:" + colour(r.values.family) }));
            td.appendChild(document.createTextNode(r.display.family));
          } else if (col === "test_acc") {
            td.className = "num acc";
            td.appendChild(document.createTextNode(r.display.test_acc));
            if (r.values.test_acc !== null) td.appendChild(intervalBar(r.values));
          } else if (col === "near_best") {
            if (r.values.near_best) td.appendChild(el("span", { "class": "badge", title: "p = " + r.display.p_vs_best + " (" + (r.values.best_test || "") + ")" }, r.values.best_test === "best" ? "best" : "\u2248best"));
          } else if (col === "status") {
            td.appendChild(el("span", { "class": "status-" + r.values.status }, r.display.status));
          } else {
            td.textContent = r.display[col];
          }
          row.appendChild(td);
        });
        body.appendChild(row);
      });
    table.appendChild(body);
  }

  // ---------------------------------------------------------------- Pareto scatter
  var pareto = { x: data.default_x, y: data.default_y, logX: false, logY: false, hidden: {} };

  function axisSelect(id, text, current, onChange) {
    var wrap = el("label", {}, text + " ");
    var select = el("select", { id: id });
    data.axes.forEach(function (col) {
      var option = el("option", { value: col }, label(col) + " (" + data.columns[col].direction + " is better)");
      if (col === current) option.selected = true;
      select.appendChild(option);
    });
    select.addEventListener("change", function () { onChange(select.value); });
    wrap.appendChild(select);
    return wrap;
  }
  function checkbox(id, text, onChange) {
    var wrap = el("label", {});
    var box = el("input", { type: "checkbox", id: id });
    box.addEventListener("change", function () { onChange(box.checked); });
    wrap.appendChild(box);
    wrap.appendChild(document.createTextNode(" " + text));
    return wrap;
  }

  function renderParetoControls() {
    var controls = document.getElementById("pareto-controls");
    clear(controls);
    if (!data.axes.length) return;
    controls.appendChild(axisSelect("pareto-x", "X", pareto.x, function (v) { pareto.x = v; renderPareto(); }));
    controls.appendChild(axisSelect("pareto-y", "Y", pareto.y, function (v) { pareto.y = v; renderPareto(); }));
    controls.appendChild(checkbox("pareto-logx", "log X", function (v) { pareto.logX = v; renderPareto(); }));
    controls.appendChild(checkbox("pareto-logy", "log Y", function (v) { pareto.logY = v; renderPareto(); }));
    controls.appendChild(el("span", { id: "pareto-note", "class": "note" }));
  }

  function renderPareto() {
    var plot = document.getElementById("pareto-plot");
    clear(plot);
    var W = 960, H = 500;
    var note = document.getElementById("pareto-note");
    if (!pareto.x || !pareto.y) { plot.appendChild(emptyPlot(W, H, "no numeric columns to plot")); return; }
    var usable = function (v, log) { return v !== null && v !== undefined && (!log || v > 0); };
    var points = ranked.filter(function (r) {
      return !pareto.hidden[r.values.family] && usable(r.values[pareto.x], pareto.logX) && usable(r.values[pareto.y], pareto.logY);
    });
    var left = ranked.length - points.length;
    if (note) note.textContent = points.length + " experiments plotted" + (left ? ", " + left + " without both values (or hidden, or not positive on a log axis)" : "");
    if (!points.length) { plot.appendChild(emptyPlot(W, H, "no experiment has both values")); return; }
    var fr = frame({ width: W, height: H, title: "Pareto front", logX: pareto.logX, logY: pareto.logY,
      xs: points.map(function (r) { return r.values[pareto.x]; }), ys: points.map(function (r) { return r.values[pareto.y]; }),
      xfmt: data.columns[pareto.x].fmt, yfmt: data.columns[pareto.y].fmt,
      xlabel: label(pareto.x) + " (" + data.columns[pareto.x].direction + " is better)",
      ylabel: label(pareto.y) + " (" + data.columns[pareto.y].direction + " is better)" });

    var onFront = {};
    (data.fronts[pareto.x + "|" + pareto.y] || []).forEach(function (id) { onFront[id] = true; });
    var front = points.filter(function (r) { return onFront[r.id]; })
      .sort(function (a, b) { return a.values[pareto.x] - b.values[pareto.x]; });
    // one front per task: results of different tasks are never compared with each other
    var byTask = {};
    front.forEach(function (r) { (byTask[r.values.task] = byTask[r.values.task] || []).push(r); });
    Object.keys(byTask).forEach(function (task) {
      if (byTask[task].length < 2) return;
      fr.root.appendChild(svg("polyline", { "class": "front", "data-task": task, points: byTask[task].map(function (r) {
        return fr.sx.map(r.values[pareto.x]).toFixed(1) + "," + fr.sy.map(r.values[pareto.y]).toFixed(1);
      }).join(" ") }));
    });
    points.forEach(function (r) {
      var c = svg("circle", { "class": "point" + (onFront[r.id] ? " on-front" : ""), r: onFront[r.id] ? 6 : 4.5,
        cx: fr.sx.map(r.values[pareto.x]).toFixed(1), cy: fr.sy.map(r.values[pareto.y]).toFixed(1),
        fill: colour(r.values.family), "data-experiment": r.values.experiment });
      c.appendChild(svg("title", {}, r.values.experiment));
      var lines = [r.values.experiment, r.values.family + (r.values.variant !== r.values.family ? " / " + r.values.variant : ""),
        label(pareto.x) + ": " + r.display[pareto.x], label(pareto.y) + ": " + r.display[pareto.y]];
      if (data.cross_task_tasks && data.cross_task_tasks.length > 1) lines.push("task: " + r.values.task);
      if (onFront[r.id]) lines.push("on the Pareto front of its task");
      c.addEventListener("mouseenter", function (e) { showTip(e, lines); });
      c.addEventListener("mousemove", moveTip);
      c.addEventListener("mouseleave", hideTip);
      fr.root.appendChild(c);
    });
    plot.appendChild(fr.root);
  }

  function renderLegend() {
    var legend = document.getElementById("pareto-legend");
    clear(legend);
    var present = {};
    ranked.forEach(function (r) { present[r.values.family] = true; });
    Object.keys(data.families).filter(function (f) { return present[f]; }).forEach(function (family) {
      var button = el("button", { type: "button", "aria-pressed": pareto.hidden[family] ? "false" : "true", title: "show or hide " + family });
      button.appendChild(el("span", { "class": "swatch", style: "background:" + colour(family) }));
      button.appendChild(document.createTextNode(family));
      button.addEventListener("click", function () {
        pareto.hidden[family] = !pareto.hidden[family];
        button.setAttribute("aria-pressed", pareto.hidden[family] ? "false" : "true");
        renderPareto();
      });
      legend.appendChild(button);
    });
  }

  // ---------------------------------------------------------------- learning curves
  var chosen = {};
  (data.default_curves || []).forEach(function (name) { chosen[name] = true; });
  var CURVE_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];

  function renderPicker() {
    var list = document.getElementById("curve-list");
    var search = document.getElementById("curve-search");
    clear(list);
    var needle = search.value.toLowerCase();
    Object.keys(data.curves).sort().forEach(function (name) {
      if (needle && name.toLowerCase().indexOf(needle) < 0) return;
      var wrap = el("label", { title: name });
      var box = el("input", { type: "checkbox", "data-experiment": name });
      box.checked = !!chosen[name];
      box.addEventListener("change", function () { chosen[name] = box.checked; renderCurves(); });
      wrap.appendChild(box);
      wrap.appendChild(document.createTextNode(" " + name));
      list.appendChild(wrap);
    });
  }

  function curveChart(target, key, ylabel, yfmt) {
    clear(target);
    var W = 560, H = 340;
    var names = Object.keys(chosen).filter(function (n) { return chosen[n] && data.curves[n]; }).sort();
    var series = [];
    names.forEach(function (name, i) {
      data.curves[name].forEach(function (curve) {
        var pts = [];
        curve.step.forEach(function (s, j) { if (curve[key][j] !== null) pts.push([s, curve[key][j]]); });
        if (pts.length) series.push({ name: name, seed: curve.seed, pts: pts, colour: CURVE_COLOURS[i % CURVE_COLOURS.length] });
      });
    });
    if (!series.length) { target.appendChild(emptyPlot(W, H, names.length ? "no " + ylabel + " logged" : "choose experiments on the left")); return; }
    var xs = [], ys = [];
    series.forEach(function (s) { s.pts.forEach(function (p) { xs.push(p[0]); ys.push(p[1]); }); });
    var fr = frame({ width: W, height: H, title: ylabel, xs: xs, ys: ys, xfmt: "count", yfmt: yfmt, xlabel: "step", ylabel: ylabel });
    series.forEach(function (s) {
      var line = svg("polyline", { "class": "curve", stroke: s.colour, "data-experiment": s.name,
        points: s.pts.map(function (p) { return fr.sx.map(p[0]).toFixed(1) + "," + fr.sy.map(p[1]).toFixed(1); }).join(" ") });
      line.appendChild(svg("title", {}, s.name + (s.seed !== null ? " (seed " + s.seed + ")" : "")));
      fr.root.appendChild(line);
    });
    target.appendChild(fr.root);
    var legend = el("div", { "class": "legend" });
    names.forEach(function (name, i) {
      var item = el("span");
      item.appendChild(el("span", { "class": "swatch", style: "background:" + CURVE_COLOURS[i % CURVE_COLOURS.length] }));
      item.appendChild(document.createTextNode(name));
      legend.appendChild(item);
    });
    target.appendChild(legend);
  }

  function renderCurves() {
    curveChart(document.getElementById("curve-valid"), "valid_acc", "validation accuracy", "pct");
    curveChart(document.getElementById("curve-loss"), "train_loss", "train loss", "float");
  }

  // ---------------------------------------------------------------- tuning
  // One small plot per tuned row: validation accuracy per trial, the choice filled, failed and
  // cancelled trials as crosses on the axis (they have no score).
  function renderTuning() {
    var box = document.getElementById("tuning-body");
    clear(box);
    var names = Object.keys(data.tuning || {}).sort();
    if (!names.length) { box.appendChild(el("p", { "class": "note" }, "No tuned experiments.")); return; }
    names.forEach(function (name) {
      var info = data.tuning[name], trials = info.trials;
      var fig = el("figure", { "class": "plot tuning-plot", "data-experiment": name });
      fig.appendChild(el("figcaption", {}, name + " (from " + info.base + "): " + info.budget));
      var scored = trials.filter(function (t) { return t.valid_acc !== null; });
      if (!trials.length) { fig.appendChild(emptyPlot(420, 200, "no trials")); box.appendChild(fig); return; }
      var fr = frame({ width: 420, height: 200, title: "validation accuracy per trial",
        // from 0 to at least 5: whole-number ticks, one per trial or every other one
        xs: [0, Math.max(trials.length, 5)], ys: scored.map(function (t) { return t.valid_acc; }).concat([0]),
        xfmt: "count", yfmt: "pct", xlabel: "trial", ylabel: "valid acc" });
      trials.forEach(function (t, i) {
        var x = fr.sx.map(i + 1), lines = ["trial " + (i + 1) + ": " + t.label, "status: " + t.status];
        var mark;
        if (t.valid_acc === null) {
          var y0 = fr.sy.map(0);
          mark = svg("text", { x: x, y: y0 - 6, "text-anchor": "middle", "class": "trial-failed" }, "\u00d7");
        } else {
          lines.push("valid acc: " + (t.valid_acc * 100).toFixed(1) + "%" + (t.chosen ? " (chosen)" : ""));
          mark = svg("circle", { cx: x, cy: fr.sy.map(t.valid_acc), r: 5, "class": t.chosen ? "trial chosen" : "trial",
            fill: t.chosen ? "#1f6f3f" : "none", stroke: "#1f6f3f" });
        }
        mark.addEventListener("mouseenter", function (e) { showTip(e, lines); });
        mark.addEventListener("mousemove", moveTip);
        mark.addEventListener("mouseleave", hideTip);
        fr.root.appendChild(mark);
      });
      fig.appendChild(fr.root);
      box.appendChild(fig);
    });
  }

  // ---------------------------------------------------------------- failures
  function renderFailures() {
    var box = document.getElementById("failures-body");
    clear(box);
    if (!failures.length) { box.appendChild(el("p", { "class": "note" }, "No failed or cancelled runs.")); return; }
    box.appendChild(el("p", { "class": "note" }, failures.length + " run(s). Superseded: a newer successful result of the same experiment exists."));
    var wrap = el("div", { "class": "table-wrap" });
    var table = el("table", { id: "failures-table" });
    var tr = el("tr");
    data.failure_columns.forEach(function (col) { tr.appendChild(el("th", { scope: "col" }, label(col))); });
    var head = el("thead");
    head.appendChild(tr);
    table.appendChild(head);
    var body = el("tbody");
    failures.forEach(function (r) {
      var row = el("tr", { "data-experiment": r.values.experiment });
      data.failure_columns.forEach(function (col) {
        var td = el("td", { "class": col });
        if (col === "error") td.appendChild(el("pre", {}, r.values.error || ""));
        else if (col === "status") td.appendChild(el("span", { "class": "status-" + r.values.status }, r.display.status));
        else td.textContent = r.display[col];
        row.appendChild(td);
      });
      body.appendChild(row);
    });
    table.appendChild(body);
    wrap.appendChild(table);
    box.appendChild(wrap);
  }

  renderTable();
  renderParetoControls();
  renderPareto();
  renderLegend();
  document.getElementById("curve-search").addEventListener("input", renderPicker);
  renderPicker();
  renderCurves();
  renderTuning();
  renderFailures();
  document.body.setAttribute("data-ready", "true");
})();
