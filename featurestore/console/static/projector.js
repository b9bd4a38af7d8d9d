// The embedding projector: draws the sampled points of a commit (and optionally a second commit on the
// same plane), colours them by a scalar column, shows the key under the pointer, and highlights a
// searched key with its nearest neighbours (asked from the online view). No library, no remote asset.
(function () {
  "use strict";
  var root = document.getElementById("projector");
  if (!root) { return; }
  var state = { data: null, color: root.dataset.color, highlight: null, neighbours: [], maps: [] };
  var tooltip = document.getElementById("tooltip");
  var statusLine = document.getElementById("status");

  function palette(t) {  // viridis-like ramp, t in [0, 1]
    var stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    var x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
    var i = Math.min(Math.floor(x), stops.length - 2), f = x - i;
    var a = stops[i], b = stops[i + 1];
    return "rgb(" + Math.round(a[0] + (b[0] - a[0]) * f) + "," + Math.round(a[1] + (b[1] - a[1]) * f) + "," +
      Math.round(a[2] + (b[2] - a[2]) * f) + ")";
  }

  // the colour scale: 2nd to 98th percentile; a log scale for heavy-tailed counts (as featurestore plot)
  function range(values, log) {
    var finite = values.filter(function (v) { return v !== null && isFinite(v); }).sort(function (a, b) { return a - b; });
    if (!finite.length) { return { lo: 0, hi: 1, log: false }; }
    var lo = finite[Math.floor(finite.length * 0.02)], hi = finite[Math.floor((finite.length - 1) * 0.98)];
    if (log) { lo = Math.max(lo, 1); hi = Math.max(hi, 2); }
    return { lo: lo, hi: hi > lo ? hi : lo + 1, log: log };
  }

  function position(v, lim) {
    if (lim.log) { return (Math.log(Math.max(v, lim.lo)) - Math.log(lim.lo)) / (Math.log(lim.hi) - Math.log(lim.lo)); }
    return (v - lim.lo) / (lim.hi - lim.lo);
  }

  function makeMap(canvas, xs, ys) {
    var pad = 12, minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity, i;
    for (i = 0; i < xs.length; i++) {
      if (xs[i] === null || ys[i] === null) { continue; }
      minX = Math.min(minX, xs[i]); maxX = Math.max(maxX, xs[i]);
      minY = Math.min(minY, ys[i]); maxY = Math.max(maxY, ys[i]);
    }
    if (!isFinite(minX)) { minX = -1; maxX = 1; minY = -1; maxY = 1; }
    var sx = (canvas.width - 2 * pad) / ((maxX - minX) || 1), sy = (canvas.height - 2 * pad) / ((maxY - minY) || 1);
    var s = Math.min(sx, sy);
    var px = new Float32Array(xs.length), py = new Float32Array(xs.length);
    for (i = 0; i < xs.length; i++) {
      px[i] = xs[i] === null ? NaN : pad + (xs[i] - minX) * s;
      py[i] = ys[i] === null ? NaN : canvas.height - pad - (ys[i] - minY) * s;
    }
    return { canvas: canvas, ctx: canvas.getContext("2d"), px: px, py: py };
  }

  // the colour of each point for the chosen column: a ramp for numbers, a palette for categories
  function colorer() {
    var c = state.data.colors[state.color];
    if (!c) { return function () { return "#3060c0"; }; }
    if (c.kind === "categorical") {
      return function (i) { var code = c.codes[i]; return code < 0 ? "#999" : c.palette[code % c.palette.length]; };
    }
    var lim = range(c.values, c.log);
    return function (i) { var v = c.values[i]; return v === null || v === undefined ? "#999" : palette(position(v, lim)); };
  }

  function draw() {
    var d = state.data;
    if (!d) { return; }
    var colorOf = colorer();
    var marked = {};
    state.neighbours.forEach(function (k) { marked[k] = true; });
    state.maps.forEach(function (m) {
      var ctx = m.ctx, i, r = d.keys.length > 5000 ? 1.6 : 2.6;
      ctx.clearRect(0, 0, m.canvas.width, m.canvas.height);
      ctx.globalAlpha = state.highlight ? 0.35 : 0.85;
      for (i = 0; i < d.keys.length; i++) {
        if (isNaN(m.px[i])) { continue; }
        ctx.fillStyle = colorOf(i);
        ctx.fillRect(m.px[i] - r / 2, m.py[i] - r / 2, r, r);
      }
      ctx.globalAlpha = 1;
      for (i = 0; i < d.keys.length; i++) {
        if (isNaN(m.px[i])) { continue; }
        if (marked[d.keys[i]]) { ring(ctx, m.px[i], m.py[i], 4, "#e65100"); }
      }
      var h = state.highlight === null ? -1 : d.keys.indexOf(state.highlight);
      if (h >= 0 && !isNaN(m.px[h])) { ring(ctx, m.px[h], m.py[h], 7, "#d50000"); }
    });
  }

  function ring(ctx, x, y, r, color) {
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.lineWidth = 2;
    ctx.strokeStyle = color;
    ctx.stroke();
  }

  function nearestPoint(m, x, y) {
    var best = -1, bestD = 64, i, dx, dy, dd;  // within 8 px
    for (i = 0; i < m.px.length; i++) {
      dx = m.px[i] - x; dy = m.py[i] - y; dd = dx * dx + dy * dy;
      if (dd < bestD) { bestD = dd; best = i; }
    }
    return best;
  }

  function hover(m, ev) {
    var rect = m.canvas.getBoundingClientRect();
    var x = (ev.clientX - rect.left) * m.canvas.width / rect.width, y = (ev.clientY - rect.top) * m.canvas.height / rect.height;
    var i = nearestPoint(m, x, y);
    if (i < 0) { tooltip.hidden = true; return; }
    tooltip.textContent = String(state.data.keys[i]) + valueText(i);
    tooltip.style.left = (ev.pageX + 12) + "px";
    tooltip.style.top = (ev.pageY + 12) + "px";
    tooltip.hidden = false;
    m.canvas.dataset.hoverKey = String(state.data.keys[i]);
  }

  function valueText(i) {
    var c = state.data.colors[state.color];
    if (!c) { return ""; }
    if (c.kind === "categorical") { return "  " + state.color + " " + (c.codes[i] < 0 ? "(none)" : c.labels[c.codes[i]]); }
    return c.values[i] === null ? "" : "  " + state.color + " " + c.values[i];
  }

  function swatch(color, text) {
    var li = document.createElement("li"), box = document.createElement("span");
    box.className = "swatch";
    box.style.background = color;
    li.appendChild(box);
    li.appendChild(document.createTextNode(text));
    return li;
  }

  // the legend: the colour scale of a number, or each category's colour and count
  function legend() {
    var d = state.data, scale = document.getElementById("legend"), note = document.getElementById("legend-note");
    if (!d) { return; }
    var c = d.colors[state.color], text = "";
    while (scale.firstChild) { scale.removeChild(scale.firstChild); }
    scale.dataset.kind = c ? c.kind : "";
    if (c && c.kind === "categorical") {
      var title = document.createElement("span");
      title.textContent = "colour: " + state.color;
      scale.appendChild(title);
      var list = document.createElement("ul");
      list.className = "categories";
      c.labels.forEach(function (label, i) {
        list.appendChild(swatch(c.palette[i % c.palette.length], label + " (" + c.counts[i].toLocaleString() + ")"));
      });
      if (c.codes.some(function (x) { return x < 0; })) { list.appendChild(swatch("#999", "(none)")); }
      scale.appendChild(list);
    } else if (c) {
      var lim = range(c.values, c.log);
      scale.textContent = "colour: " + state.color + " from " + fmtValue(lim.lo) + " (dark) to " + fmtValue(lim.hi) +
        " (light)" + (lim.log ? ", log scale." : ".");
    }
    if (d.explained_variance && d.method === "pca") {
      text += "PCA axes explain " + Math.round(d.explained_variance[0] * 100) + "% and " + Math.round(d.explained_variance[1] * 100) + "% of the variance. ";
    }
    if (d["with"]) {
      text += d["with"].shared + " of the sampled keys are in commit " + d["with"].commit + "; mean cosine " +
        fmt(d["with"].cosine_before) + " before alignment, " + fmt(d["with"].cosine_after) + " after.";
    }
    note.textContent = text;
  }

  function fmtValue(x) { return Math.abs(x) >= 1e6 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(2) : String(Math.round(x * 1000) / 1000); }

  function fmt(x) { return x === null || x === undefined ? "-" : Number(x).toFixed(3); }

  function showNeighbours(doc) {
    var table = document.getElementById("neighbours"), body = table.querySelector("tbody");
    var empty = document.getElementById("neighbours-empty"), missing = document.getElementById("not-found");
    if (empty) { empty.hidden = true; }
    if (missing) { missing.remove(); }
    while (body.firstChild) { body.removeChild(body.firstChild); }
    var title = document.querySelector("#results h2");
    title.textContent = "Nearest neighbours of " + doc.key;
    if (!doc.found) {
      table.hidden = true;
      var p = document.createElement("p");
      p.className = "error"; p.id = "not-found";
      p.textContent = "commit " + doc.commit + " has no key " + doc.key;
      table.parentNode.insertBefore(p, table);
      state.highlight = null; state.neighbours = [];
      draw();
      return;
    }
    doc.neighbours.forEach(function (n, i) {
      var tr = document.createElement("tr");
      [String(i + 1), String(n.key), Number(n.score).toFixed(4)].forEach(function (t) {
        var td = document.createElement("td"); td.textContent = t; tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.hidden = false;
    state.highlight = doc.key;
    state.neighbours = doc.neighbours.map(function (n) { return n.key; });
    draw();
  }

  function search(key, k) {
    var url = root.dataset.neighbours + "&key=" + encodeURIComponent(key) + "&k=" + encodeURIComponent(k);
    return fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (doc) {
      if (doc.error) { statusLine.textContent = doc.detail; return; }
      showNeighbours(doc);
    });
  }

  function load() {
    statusLine.textContent = "loading the map...";
    fetch(root.dataset.url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (d) {
      if (d.error) { statusLine.textContent = d.detail; return; }
      state.data = d;
      state.maps = [makeMap(document.getElementById("map"), d.x, d.y)];
      var second = document.getElementById("map2");
      if (second && d["with"]) { state.maps.push(makeMap(second, d["with"].x, d["with"].y)); }
      state.maps.forEach(function (m) {
        m.canvas.addEventListener("mousemove", function (ev) { hover(m, ev); });
        m.canvas.addEventListener("mouseleave", function () { tooltip.hidden = true; });
        m.canvas.addEventListener("click", function () {
          var k = m.canvas.dataset.hoverKey;
          if (k) { document.getElementById("key").value = k; search(k, document.getElementById("k").value); }
        });
      });
      statusLine.textContent = d.method.toUpperCase() + " of " + d.sample.toLocaleString() + " of " +
        d.rows.toLocaleString() + " keys (commit " + d.commit + "). Hover a point for its key; click it, or search a key, for its neighbours.";
      root.dataset.points = String(d.sample);
      legend();
      draw();
      if (root.dataset.key) { search(root.dataset.key, document.getElementById("k").value); }
    });
  }

  document.getElementById("search").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var key = document.getElementById("key").value.trim();
    if (key) { search(key, document.getElementById("k").value); }
  });
  document.getElementById("color").addEventListener("change", function (ev) {
    state.color = ev.target.value;
    legend();
    draw();
  });
  load();
}());
