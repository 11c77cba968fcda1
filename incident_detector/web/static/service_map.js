// The service map page: a layered drawing of who calls whom, in SVG, with no library.
// Callers are left of their callees: cycles are broken by turning the edges that close them
// (found by a depth-first walk), each node goes one layer right of its furthest caller (longest
// path), and the order within a layer is improved by a few barycentre sweeps. Workloads that
// call nobody and are called by nobody are set in a grid underneath.
// The graph is the page's embedded JSON (the same as /api/graph); nothing is fetched.
(function () {
  "use strict";
  // The SVG namespace, as the page's own (empty) drawing has it.
  var SVG = null;
  var NODE_W = 168, NODE_H = 22, ROW = 30, PAD = 24, SWEEPS = 6;
  // Columns as far apart as the frame allows, within these bounds (then the frame scrolls).
  var COL_MIN = NODE_W + 40, COL_MAX = 260, COL = COL_MAX;
  var STATE_WORDS = { incident: "✖ open incident", rollout: "↻ fresh rollout",
                      rising: "▲ errors rising", ok: "ok" };

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function clip(text, max) { return text.length > max ? text.slice(0, max - 1) + "…" : text; }

  // Positions of every node: {id: {x, y, layer}}, and the drawing's size.
  // ``fit``: the width of the frame, to spread the columns over (optional).
  function layout(nodes, edges, fit) {
    var ids = nodes.map(function (n) { return n.id; });
    var out = {}, into = {};
    ids.forEach(function (id) { out[id] = []; into[id] = []; });
    edges.forEach(function (e) {
      if (out[e.source] && into[e.target] && e.source !== e.target) { out[e.source].push(e.target); }
    });
    // Break cycles: an edge to a node still on the walk's stack is turned around.
    var mark = {}, dagOut = {}, dagIn = {};
    ids.forEach(function (id) { dagOut[id] = []; dagIn[id] = []; });
    function add(a, b) { dagOut[a].push(b); dagIn[b].push(a); }
    ids.forEach(function (start) {
      if (mark[start]) { return; }
      var stack = [[start, 0]];
      mark[start] = 1;
      while (stack.length) {
        var top = stack[stack.length - 1], id = top[0], next = out[id][top[1]];
        if (next === undefined) { mark[id] = 2; stack.pop(); continue; }
        top[1] += 1;
        if (mark[next] === 1) { add(next, id); continue; }
        add(id, next);
        if (!mark[next]) { mark[next] = 1; stack.push([next, 0]); }
      }
    });
    var linked = ids.filter(function (id) { return dagOut[id].length || dagIn[id].length; });
    var alone = ids.filter(function (id) { return !dagOut[id].length && !dagIn[id].length; });
    // Longest-path layers, in topological order (Kahn).
    var layer = {}, waiting = {}, queue = [];
    linked.forEach(function (id) { waiting[id] = dagIn[id].length; layer[id] = 0;
                                   if (!waiting[id]) { queue.push(id); } });
    for (var i = 0; i < queue.length; i++) {
      var id = queue[i];
      dagOut[id].forEach(function (t) {
        layer[t] = Math.max(layer[t], layer[id] + 1);
        if (--waiting[t] === 0) { queue.push(t); }
      });
    }
    var layers = [];
    linked.forEach(function (id) { (layers[layer[id]] = layers[layer[id]] || []).push(id); });
    layers = layers.filter(Boolean);
    layers.forEach(function (l, index) { l.forEach(function (id) { layer[id] = index; }); });
    // Order within layers: the mean position of the neighbours, sweeping both ways.
    var rank = {};
    layers.forEach(function (l) { l.sort(); l.forEach(function (id, k) { rank[id] = k; }); });
    function sweep(order, neighbours) {
      order.forEach(function (l) {
        var score = {};
        l.forEach(function (id) {
          var near = neighbours(id);
          score[id] = near.length ? near.reduce(function (s, n) { return s + rank[n]; }, 0) / near.length
            : rank[id];
        });
        l.sort(function (a, b) { return score[a] - score[b] || (a < b ? -1 : 1); });
        l.forEach(function (id, k) { rank[id] = k; });
      });
    }
    for (var s = 0; s < SWEEPS; s++) {
      sweep(layers.slice(1), function (id) { return dagIn[id]; });
      sweep(layers.slice(0, -1).reverse(), function (id) { return dagOut[id]; });
    }
    // A deep graph (a long chain of calls) is folded into bands of as many layers as the frame
    // holds, stacked top to bottom, rather than drawn as one row of hundreds of columns.
    var perBand = fit ? Math.max(1, Math.floor((fit - 2 * PAD - NODE_W) / COL_MIN) + 1)
      : Math.max(1, layers.length);
    var across = Math.min(layers.length, perBand);
    if (across > 1 && fit) {
      COL = Math.max(COL_MIN, Math.min(COL_MAX, (fit - 2 * PAD - NODE_W) / (across - 1)));
    }
    var pos = {}, top = PAD;
    for (var band = 0; band * perBand < layers.length; band++) {
      var group = layers.slice(band * perBand, (band + 1) * perBand);
      var tallest = group.reduce(function (m, l) { return Math.max(m, l.length); }, 0);
      group.forEach(function (l, j) {
        var offset = (tallest - l.length) * ROW / 2;
        l.forEach(function (id, k) {
          pos[id] = { x: PAD + j * COL, y: top + offset + k * ROW, layer: band * perBand + j };
        });
      });
      top += tallest * ROW + ROW;
    }
    if (!alone.length || !linked.length) { top -= ROW; }
    var width = Math.max(0, across - 1) * COL + NODE_W + 2 * PAD;
    var perRow = Math.max(1, Math.floor((Math.max(width, 4 * COL) - PAD) / (NODE_W + 16)));
    alone.sort().forEach(function (id, k) {
      pos[id] = { x: PAD + (k % perRow) * (NODE_W + 16), y: top + Math.floor(k / perRow) * ROW,
                  layer: -1 };
    });
    var height = top + Math.ceil(alone.length / perRow) * ROW + PAD;
    return { pos: pos, width: Math.max(width, alone.length ? perRow * (NODE_W + 16) + PAD : 0),
             height: height };
  }

  function evidenceText(edge) {
    return edge.evidence.map(function (e) { return e.kind + ": " + e.detail; }).join("\n");
  }

  function showDetails(panel, title, lines, link) {
    panel.textContent = "";
    var h = document.createElement("h2");
    h.textContent = title;
    panel.appendChild(h);
    var list = document.createElement("ul");
    lines.forEach(function (line) {
      var item = document.createElement("li");
      if (line.kind) {
        var kind = document.createElement("strong");
        kind.textContent = line.kind.replace("_", " ");
        item.appendChild(kind);
        item.appendChild(document.createTextNode(" " + line.detail));
        if (line.seen_at) {
          var when = document.createElement("small");
          when.textContent = " · seen " + line.seen_at.replace("T", " ").replace("Z", " UTC");
          item.appendChild(when);
        }
      } else {
        item.textContent = line;
      }
      list.appendChild(item);
    });
    panel.appendChild(list);
    (link || []).forEach(function (l) {
      var a = document.createElement("a");
      a.href = l[0];
      a.textContent = l[1];
      var p = document.createElement("p");
      p.appendChild(a);
      panel.appendChild(p);
    });
  }

  function draw(data, holder, panel) {
    var t0 = performance.now();
    var nodes = data.nodes, edges = data.edges, byId = {};
    nodes.forEach(function (n) { byId[n.id] = n; });
    var placed = layout(nodes, edges, holder.clientWidth);
    var pos = placed.pos;
    var near = {};
    (data.near || []).forEach(function (id) { near[id] = true; });
    var focus = data.focus && byId[data.focus] ? data.focus : null;
    var svg = el("svg", { width: placed.width, height: placed.height, role: "img",
                          viewBox: "0 0 " + placed.width + " " + placed.height,
                          "aria-label": "Service map: " + nodes.length + " nodes, " + edges.length + " links",
                          "class": "service-map" + (focus ? " focused" : "") });
    var defs = el("defs", {}, svg);
    var marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
                                markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
    el("path", { d: "M0,0 L10,5 L0,10 z", "class": "arrow" }, marker);
    var links = el("g", { "class": "links" }, svg);
    edges.forEach(function (e) {
      var a = pos[e.source], b = pos[e.target];
      if (!a || !b) { return; }
      var x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2, d;
      if (b.layer > a.layer) {  // onwards; into the next band when the graph is folded
        var mid = x2 > x1 ? (x2 - x1) / 2 : 60;
        d = "M" + x1 + "," + y1 + " C" + (x1 + mid) + "," + y1 + " " + (x2 - mid) + "," + y2 + " " + x2 + "," + y2;
      } else {  // a link back (a cycle) or within a layer: around, under the nodes
        var dip = Math.max(y1, y2) + ROW * 0.9;
        d = "M" + (a.x + NODE_W / 2) + "," + (a.y + NODE_H) + " C" + (a.x + NODE_W / 2) + "," + dip + " " +
            (b.x + NODE_W / 2) + "," + dip + " " + (b.x + NODE_W / 2) + "," + (b.y + NODE_H);
      }
      var emphasised = focus && near[e.source] && near[e.target];
      var g = el("g", { "class": "link" + (emphasised ? " near" : focus ? " dim" : ""),
                        "data-source": e.source, "data-target": e.target, tabindex: 0 }, links);
      el("title", {}, g).textContent = e.source + " → " + e.target + "\n" + evidenceText(e);
      el("path", { d: d, "class": "hit" }, g);
      el("path", { d: d, "class": "line", "marker-end": "url(#arrow)" }, g);
      function open() {
        showDetails(panel, e.source + " → " + e.target, e.evidence,
                    [["/map?workload=" + encodeURIComponent(e.target), "Centre on " + e.target]]);
      }
      g.addEventListener("click", open);
      g.addEventListener("keydown", function (ev) { if (ev.key === "Enter") { open(); } });
    });
    var group = el("g", { "class": "nodes" }, svg);
    nodes.forEach(function (n) {
      var p = pos[n.id];
      var classes = "node state-" + n.state + " kind-" + n.kind +
        (n.id === focus ? " focus" : focus && near[n.id] ? " near" : focus ? " dim" : "");
      var g = el("g", { "class": classes, transform: "translate(" + p.x + "," + p.y + ")",
                        "data-id": n.id, "data-state": n.state, tabindex: 0 }, group);
      el("title", {}, g).textContent = n.id + " · " + (STATE_WORDS[n.state] || n.state);
      el("rect", { width: NODE_W, height: NODE_H, rx: n.kind === "external" ? 11 : 4 }, g);
      var mark = { incident: "✖ ", rollout: "↻ ", rising: "▲ " }[n.state] || "";
      var label = el("text", { x: 8, y: NODE_H / 2 + 4 }, g);
      label.textContent = clip(mark + (n.kind === "external" ? n.name : n.name), 24);
      function open() {
        var calls = edges.filter(function (e) { return e.source === n.id; })
          .map(function (e) { return "calls " + e.target; });
        var called = edges.filter(function (e) { return e.target === n.id; })
          .map(function (e) { return "called by " + e.source; });
        var extra = [["/map?workload=" + encodeURIComponent(n.id), "Centre the map on " + n.id]];
        if (n.incident) { extra.unshift(["/incidents/" + n.incident, "Open incident " + n.incident]); }
        showDetails(panel, n.id, [STATE_WORDS[n.state] || n.state].concat(calls, called), extra);
      }
      g.addEventListener("click", open);
      g.addEventListener("keydown", function (ev) { if (ev.key === "Enter") { open(); } });
    });
    holder.textContent = "";
    holder.appendChild(svg);
    if (focus) {
      var box = pos[focus];
      holder.scrollLeft = Math.max(0, box.x - holder.clientWidth / 2);
      holder.scrollTop = Math.max(0, box.y - holder.clientHeight / 2);
    }
    holder.setAttribute("data-rendered-ms", String(Math.round(performance.now() - t0)));
    holder.setAttribute("data-rendered", "true");
  }

  var source = document.getElementById("graph-data");
  var holder = document.getElementById("map-canvas");
  var panel = document.getElementById("map-details");
  var blank = holder && holder.querySelector("svg");
  if (source && holder && panel && blank) {
    SVG = blank.namespaceURI;
    draw(JSON.parse(source.textContent), holder, panel);
  }
  // For measuring and testing a drawing of any graph in the same page.
  window.serviceMap = { layout: layout, draw: function (data) { draw(data, holder, panel); } };
})();
