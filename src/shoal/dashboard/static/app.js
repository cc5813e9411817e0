// shoal dashboard: vanilla JS, polls the control plane's REST API every few seconds.
"use strict";

const POLL_MS = 3000;
const $ = (sel) => document.querySelector(sel);
const state = { page: "overview", service: null, trace: null, resource: null, topo: null };

// ---------------------------------------------------------------- helpers
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) el.setAttribute(k, v);
  }
  for (const c of children.flat(4)) el.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return el;
}
const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children.flat(4)) el.append(c instanceof Node ? c : document.createTextNode(c));
  return el;
}
// The operator token: handed over in the URL fragment by `shoal dashboard` / `shoal up`
// (#token=..., never sent to a server), kept for this tab only, sent as a bearer token.
const TOKEN_KEY = "shoal-token";
if (location.hash.startsWith("#token=")) {  // #token=T[&page=P]
  const given = new URLSearchParams(location.hash.slice(1));
  sessionStorage.setItem(TOKEN_KEY, given.get("token"));
  history.replaceState(null, "", location.pathname + location.search + "#" + (given.get("page") || "overview"));
}
class AuthError extends Error {}
async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const resp = await fetch(path, { headers });
  if (resp.status === 401 || resp.status === 403) {
    let msg = `${resp.status}`;
    try { msg = (await resp.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new AuthError(msg);
  }
  if (!resp.ok) throw new Error(`${path}: ${resp.status}`);
  return resp.json();
}
function showLogin(message) {
  const dialog = $("#login");
  $("#login-reason").textContent = message;
  dialog.hidden = false;
}
$("#login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#login-token").value.trim());
  $("#login").hidden = true;
  refresh();
});
const fmt = {
  rps: (v) => v == null ? "–" : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2),
  pct: (v) => v == null ? "–" : (v * 100 >= 10 ? (v * 100).toFixed(1) : (v * 100).toFixed(2)) + "%",
  ms: (v) => v == null ? "–" : v >= 1000 ? (v / 1000).toFixed(2) + " s" : v >= 10 ? v.toFixed(0) + " ms" : v.toFixed(1) + " ms",
  num: (v) => v == null ? "–" : v >= 1e6 ? (v / 1e6).toFixed(1) + "M" : v >= 1e4 ? (v / 1e3).toFixed(1) + "k" : String(Math.round(v)),
  dur: (sec) => sec >= 86400 ? (sec / 86400).toFixed(1).replace(/\.0$/, "") + "d" : sec >= 3600 ? (sec / 3600).toFixed(1).replace(/\.0$/, "") + "h" : sec >= 60 ? Math.round(sec / 60) + "m" : Math.round(sec) + "s",
};
const errClass = (ratio) => ratio >= 0.05 ? "crit" : ratio >= 0.01 ? "warn" : "ok";
const colour = (cls) => `var(--${cls})`;
const stateBadge = (st) => h("span", { class: "badge " + ({ OK: "b-ok", WARNING: "b-warn", CRITICAL: "b-crit" }[st] || "b-muted") }, st);
const windowSec = () => Number($("#window").value);
function table(el, columns, rows, { empty = "Nothing yet.", onClick = null, selected = null } = {}) {
  el.replaceChildren();
  if (!rows.length) { el.append(h("tr", {}, h("td", { class: "empty" }, empty))); return; }
  el.append(h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : "" }, c.title)))));
  const body = h("tbody");
  for (const r of rows) {
    const tr = h("tr", { class: (onClick ? "click " : "") + (selected && selected(r) ? "selected" : "") },
      columns.map((c) => { const v = c.cell(r); return h("td", { class: c.num ? "num" : "" }, v); }));
    if (onClick) tr.addEventListener("click", () => onClick(r));
    body.append(tr);
  }
  el.append(body);
}

// ---------------------------------------------------------------- topology graph
function layout(nodes, edges) {
  // layered left-to-right: a node's column is its longest path from a root
  const incoming = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) if (e.source !== e.target) incoming.get(e.target)?.push(e.source);
  const depth = new Map();
  const visit = (id, seen) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const d = Math.max(-1, ...(incoming.get(id) || []).map((p) => visit(p, seen))) + 1;
    depth.set(id, d);
    return d;
  };
  nodes.forEach((n) => visit(n.id, new Set()));
  const cols = [];
  for (const n of nodes) (cols[depth.get(n.id)] ||= []).push(n);
  const pos = new Map();
  cols.forEach((col, i) => {
    if (i > 0) {  // order by the mean position of callers (fewer crossings)
      const bary = (n) => { const ps = (incoming.get(n.id) || []).filter((p) => pos.has(p)).map((p) => pos.get(p).row); return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : 99; };
      col.sort((a, b) => bary(a) - bary(b) || a.name.localeCompare(b.name));
    }
    col.forEach((n, j) => pos.set(n.id, { col: i, row: j, of: col.length }));
  });
  return { pos, columns: cols.length };
}

function lockIcon(x, y, open) {
  return s("g", { class: "lock" + (open ? " open" : ""), transform: `translate(${x - 5},${y - 7})` },
    s("title", {}, open ? "plaintext or partial mTLS" : "mutual TLS"),
    s("rect", { x: 0, y: 5, width: 10, height: 8, rx: 1.5 }),
    s("path", { d: open ? "M2 5 V3 a3 3 0 0 1 6 0" : "M2 5 V3.5 a3 3 0 0 1 6 0 V5", fill: "none", stroke: open ? "var(--warn)" : "var(--ok)", "stroke-width": 1.6 }));
}

function drawGraph(topo) {
  const svg = $("#graph");
  svg.replaceChildren();
  const nodes = topo.nodes, edges = topo.edges;
  if (!nodes.length) {
    svg.append(s("text", { x: 20, y: 40, fill: "var(--muted)" }, "No services yet: apply some config or run `shoal up`."));
    return;
  }
  const W = svg.clientWidth || 1200, H = svg.clientHeight || 430;
  const { pos, columns } = layout(nodes, edges);
  // multi-cluster: each node lists its clusters (a coloured chip each) on a second line
  const allClusters = [...new Set(nodes.flatMap((n) => n.clusters || []))].sort();
  const multi = allClusters.length > 0;
  const NW = 220, NH = multi ? 80 : 62;  // 220: room for "0.00 rps · 0.00% err · p99 498 ms"
  const colX = (c) => columns === 1 ? W / 2 : 30 + NW / 2 + c * ((W - 60 - NW) / (columns - 1));
  const at = new Map();
  for (const n of nodes) {
    const p = pos.get(n.id);
    at.set(n.id, { x: colX(p.col), y: (H / (p.of + 1)) * (p.row + 1) });
  }
  const maxRps = Math.max(0.001, ...edges.map((e) => e.rps));
  const defs = s("defs");
  for (const c of ["ok", "warn", "crit", "muted"]) {
    defs.append(s("marker", { id: "arrow-" + c, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
      s("path", { d: "M0 0 L10 5 L0 10 z", fill: colour(c) })));
  }
  svg.append(defs);
  const gEdges = s("g"), gNodes = s("g");
  for (const e of edges) {
    const a = at.get(e.source), b = at.get(e.target);
    if (!a || !b) continue;
    const cls = e.requests > 0 ? errClass(e.errorRatio) : "muted";
    const x1 = a.x + NW / 2, y1 = a.y, x2 = b.x - NW / 2 - 3, y2 = b.y;
    const dx = Math.max(40, (x2 - x1) / 2);
    const d = `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
    const width = e.requests > 0 ? 1.5 + 5 * Math.sqrt(e.rps / maxRps) : 1.2;
    const g = s("g", { class: e.crossCluster ? "edge cross-cluster" : "edge", "data-source": e.source, "data-target": e.target });
    g.append(s("title", {}, `${e.source} → ${e.target}\n${fmt.rps(e.rps)} rps, ${fmt.pct(e.errorRatio)} errors, p99 ${fmt.ms(e.p99Ms)}, mTLS ${e.mtls}${e.crossCluster ? "\ncross-cluster (via an east-west gateway)" : ""}`));
    g.append(s("path", { d, stroke: colour(cls), "stroke-width": width, "stroke-opacity": 0.8, "marker-end": `url(#arrow-${cls})`, "stroke-dasharray": e.crossCluster ? crossDash(width) : e.requests > 0 ? "" : "4 4" }));
    const mx = (x1 + x2) / 2, my = (y1 + y2) / 2;
    const line1 = `${fmt.rps(e.rps)} rps`;
    const line2 = e.requests > 0 ? `${fmt.pct(e.errorRatio)} err · p99 ${fmt.ms(e.p99Ms)}` : "idle";
    const above = y2 <= y1;  // keep labels off the curve: above a rising one, below a falling one
    const ly = above ? my - 24 : my + 16;
    g.append(lockIcon(mx - line1.length * 3.3 - 9, ly - 4, e.mtls !== "full"));
    g.append(s("text", { class: "label strong", x: mx, y: ly, "text-anchor": "middle" }, line1));
    g.append(s("text", { class: "label", x: mx, y: ly + 13, "text-anchor": "middle" }, line2));
    gEdges.append(g);
  }
  for (const n of nodes) {
    const p = at.get(n.id);
    const bad = n.requests > 0 ? errClass(n.errorRatio) : "ok";
    const g = s("g", { class: `node ${n.kind === "external" ? "ext" : ""} ${bad === "crit" ? "bad" : bad === "warn" ? "warn" : ""}`, transform: `translate(${p.x - NW / 2},${p.y - NH / 2})`, "data-id": n.id, "data-name": n.name });
    const clusters = n.clusters || [];
    g.append(s("title", {}, `${n.id}\nworkloads: ${n.workloads.join(", ") || "–"}${clusters.length ? "\nclusters: " + clusters.join(", ") : ""}`));
    g.append(s("rect", { width: NW, height: NH, rx: 10 }));
    g.append(s("circle", { cx: 14, cy: 18, r: 4.5, fill: colour(n.requests > 0 ? bad : "muted") }));
    g.append(s("text", { class: "name", x: 26, y: 23 }, n.name));
    const versions = n.versions.length ? n.versions.join(" · ") : n.namespace;
    g.append(s("text", { class: "sub", x: NW - 10, y: 23, "text-anchor": "end" }, versions));
    if (multi) clusterChips(g, 12, 34, clusters, allClusters);
    g.append(s("text", { class: "sub", x: 12, y: NH - 15 }, n.kind === "external" ? "outside the mesh" :
      `${fmt.rps(n.rps)} rps · ${fmt.pct(n.errorRatio)} err · p99 ${fmt.ms(n.p99Ms)}`));
    g.addEventListener("click", () => { if (n.kind !== "external") { state.service = n.name; location.hash = "#services"; } });
    g.style.cursor = "pointer";
    gNodes.append(g);
  }
  svg.append(gEdges, gNodes);
  if (multi) svg.append(clusterLegend(H, allClusters, edges.some((e) => e.crossCluster)));
}

// dash-dot, scaled to the edge's width (round caps would fill fixed small gaps)
const crossDash = (w) => [4 * w, 1.8 * w, w, 1.8 * w].map((x) => x.toFixed(1)).join(" ");
const clusterColour = (c, all) => `var(--cluster-${all.indexOf(c) % 4})`;

function clusterChips(g, x, y, clusters, all) {
  for (const c of clusters) {
    const w = c.length * 6.2 + 12;
    g.append(s("rect", { class: "chip", x, y, width: w, height: 16, rx: 8, style: `fill: ${clusterColour(c, all)}` }));
    g.append(s("text", { class: "chip", x: x + w / 2, y: y + 11.5, "text-anchor": "middle" }, c));
    x += w + 5;
  }
}

function clusterLegend(H, all, crossing) {
  const g = s("g", { class: "legend", transform: `translate(20,${H - 16})` });
  g.append(s("text", { class: "label", x: 0, y: 4 }, "clusters"));
  const chips = s("g");
  clusterChips(chips, 52, -8, all, all);
  g.append(chips);
  if (crossing) {
    const x = 52 + all.reduce((a, c) => a + c.length * 6.2 + 17, 0) + 16;
    g.append(s("path", { d: `M${x},0 H${x + 44}`, stroke: "var(--muted)", "stroke-width": 3, "stroke-dasharray": crossDash(3), fill: "none" }));
    g.append(s("text", { class: "label", x: x + 52, y: 4 }, "calls that cross clusters (through an east-west gateway)"));
  }
  return g;
}

// ---------------------------------------------------------------- overview
function signalsTable(topo) {
  const rows = topo.nodes.filter((n) => n.kind !== "external");
  table($("#signals"), [
    { title: "Service", cell: (n) => h("span", {}, h("b", {}, n.name), " ", n.versions.map((v) => h("span", { class: "chip" }, v))) },
    { title: "RPS", num: true, cell: (n) => fmt.rps(n.rps) },
    { title: "Errors", num: true, cell: (n) => h("span", { class: n.errorRatio >= 0.01 ? "err" : "" }, fmt.pct(n.errorRatio)) },
    { title: "P50", num: true, cell: (n) => fmt.ms(n.p50Ms) },
    { title: "P99", num: true, cell: (n) => fmt.ms(n.p99Ms) },
  ], rows, { empty: "No services.", onClick: (n) => { state.service = n.name; location.hash = "#services"; } });
}

function budgetBar(remaining) {
  const frac = Math.max(0, Math.min(1, remaining));
  const cls = remaining <= 0 ? "crit" : remaining < 0.25 ? "warn" : "ok";
  return h("div", { class: "budget", title: `${(remaining * 100).toFixed(1)}% of the error budget left` },
    h("div", { style: `width:${(frac * 100).toFixed(1)}%;background:${colour(cls)}` }));
}

function sloSummary(slos) {
  const el = $("#slo-summary");
  el.replaceChildren();
  if (!slos.length) { el.append(h("div", { class: "empty" }, "No ServiceLevelObjectives applied.")); return; }
  const grid = h("div", { class: "slo-mini" });
  for (const o of slos) {
    grid.append(h("div", {}, h("b", {}, o.name), " ", h("span", { class: "chip" }, `${o.target}% ${o.sli}`),
      " budget left ", h("b", {}, `${(o.errorBudget.remaining * 100).toFixed(1)}%`)), stateBadge(o.state), budgetBar(o.errorBudget.remaining));
  }
  el.append(grid);
}

async function refreshOverview() {
  const [topo, slos] = await Promise.all([api(`/api/v1/topology?window=${windowSec()}`), api("/api/v1/slos")]);
  state.topo = topo;
  $("#topo-note").textContent = topo.metrics ? `last ${fmt.dur(topo.windowSeconds)}` : "metrics collection is not running";
  drawGraph(topo);
  signalsTable(topo);
  sloSummary(slos.slos);
}

// ---------------------------------------------------------------- services
function lineChart(title, points, series, format) {
  const W = 400, H = 130, P = { l: 44, r: 8, t: 8, b: 18 };
  const all = points.flatMap((p) => series.map((sr) => p[sr.key])).filter((v) => v != null);
  const max = Math.max(...all, 0) * 1.15 || 1;
  const t0 = points[0]?.at ?? 0, t1 = points[points.length - 1]?.at ?? 1;
  const x = (t) => P.l + ((t - t0) / Math.max(1, t1 - t0)) * (W - P.l - P.r);
  const y = (v) => H - P.b - (v / max) * (H - P.t - P.b);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  for (const f of [0, 0.5, 1]) {
    svg.append(s("line", { class: "axis", x1: P.l, x2: W - P.r, y1: y(max * f / 1.15), y2: y(max * f / 1.15) }));
    svg.append(s("text", { class: "tick", x: P.l - 6, y: y(max * f / 1.15) + 3, "text-anchor": "end" }, format(max * f / 1.15)));
  }
  svg.append(s("text", { class: "tick", x: P.l, y: H - 4 }, new Date(t0 * 1000).toLocaleTimeString()));
  svg.append(s("text", { class: "tick", x: W - P.r, y: H - 4, "text-anchor": "end" }, "now"));
  for (const sr of series) {
    const pts = points.filter((p) => p[sr.key] != null).map((p) => `${x(p.at).toFixed(1)},${y(p[sr.key]).toFixed(1)}`);
    if (!pts.length) continue;
    if (sr.fill) svg.append(s("path", { d: `M${pts[0].split(",")[0]},${y(0)} L${pts.join(" L")} L${pts[pts.length - 1].split(",")[0]},${y(0)} Z`, fill: sr.colour, "fill-opacity": 0.12 }));
    svg.append(s("polyline", { points: pts.join(" "), fill: "none", stroke: sr.colour, "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
  }
  const last = points[points.length - 1] || {};
  return h("div", { class: "chart" }, h("h3", {}, h("span", {}, title), h("span", {}, series.map((sr, i) => [i ? " / " : "", h("b", { style: `color:${sr.colour}` }, format(last[sr.key]))]))), svg);
}

async function refreshServices() {
  const topo = state.topo || await api(`/api/v1/topology?window=${windowSec()}`);
  const names = topo.nodes.filter((n) => n.kind !== "external").map((n) => n.name);
  const pick = $("#service-pick");
  if (!state.service || !names.includes(state.service)) state.service = names[0] || null;
  if ([...pick.options].map((o) => o.value).join() !== names.join()) pick.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
  pick.value = state.service || "";
  if (!state.service) return;
  const node = topo.nodes.find((n) => n.name === state.service);
  // steps no finer than the sidecars report (every few seconds), else rates zig-zag
  const win = Math.max(600, windowSec() * 5), step = Math.max(15, Math.round(win / 40));
  const series = await api(`/api/v1/metrics/series?service=${encodeURIComponent(node.id)}&window=${win}&step=${step}`);
  $("#series-note").textContent = `last ${fmt.dur(win)}, ${step}s steps`;
  $("#charts").replaceChildren(
    lineChart("Requests / s", series.points, [{ key: "rps", colour: "var(--accent)", fill: true }], fmt.rps),
    lineChart("Errors", series.points, [{ key: "errorRatio", colour: "var(--crit)", fill: true }], fmt.pct),
    lineChart("Latency p50 / p99", series.points, [{ key: "p50Ms", colour: "var(--accent-2)" }, { key: "p99Ms", colour: "var(--warn)" }], fmt.ms));
  const name = (id) => topo.nodes.find((n) => n.id === id)?.name || id;
  const rows = topo.edges.filter((e) => e.source === node.id || e.target === node.id);
  table($("#edges"), [
    { title: "From", cell: (e) => name(e.source) }, { title: "To", cell: (e) => name(e.target) },
    { title: "Subsets", cell: (e) => Object.entries(e.subsets).map(([k, v]) => h("span", { class: "chip" }, `${k} ${fmt.rps(v)}`)) },
    { title: "RPS", num: true, cell: (e) => fmt.rps(e.rps) },
    { title: "Errors", num: true, cell: (e) => fmt.pct(e.errorRatio) },
    { title: "P99", num: true, cell: (e) => fmt.ms(e.p99Ms) },
    { title: "mTLS", cell: (e) => h("span", { class: "badge " + (e.mtls === "full" ? "b-ok" : "b-warn") }, e.mtls) },
  ], rows, { empty: "No traffic to or from this service." });
}

// ---------------------------------------------------------------- SLOs
async function refreshSlos() {
  const { slos } = await api("/api/v1/slos");
  const el = $("#slo-list");
  el.replaceChildren();
  if (!slos.length) { el.append(h("div", { class: "card empty" }, "No ServiceLevelObjectives applied. See docs/observability.md.")); return; }
  for (const o of slos) {
    const b = o.errorBudget;
    const burnRows = h("table", { class: "data" });
    table(burnRows, [
      { title: "Windows", cell: (r) => `${r.longWindow} / ${r.shortWindow}` },
      { title: "Threshold", num: true, cell: (r) => `${r.factor}×` },
      { title: "Long", num: true, cell: (r) => h("span", { class: r.longBurnRate > r.factor ? "err" : "" }, `${r.longBurnRate.toFixed(2)}×`) },
      { title: "Short", num: true, cell: (r) => h("span", { class: r.shortBurnRate > r.factor ? "err" : "" }, `${r.shortBurnRate.toFixed(2)}×`) },
      { title: "", cell: (r) => r.firing ? h("span", { class: "badge " + (r.severity === "critical" ? "b-crit" : "b-warn") }, "firing") : "" },
    ], o.burnRates);
    const observed = o.observedSeconds < o.windowSeconds ? ` (observed ${fmt.dur(o.observedSeconds)} of ${o.window})` : "";
    el.append(h("div", { class: "card slo", "data-name": o.name },
      h("div", { class: "slo-head" }, h("b", {}, o.name), h("span", { class: "muted" }, `${o.service.split(".")[0]} · ${o.sli}${o.thresholdMs ? " < " + o.thresholdMs + " ms" : ""} · ${o.target}% over ${o.window}`), stateBadge(o.state)),
      h("div", { class: "slo-metrics" },
        h("div", {}, h("span", {}, "attainment"), h("strong", {}, o.attainment == null ? "–" : o.attainment.toFixed(3) + "%")),
        h("div", {}, h("span", {}, "budget left"), h("strong", { class: b.remaining <= 0 ? "err" : "" }, (b.remaining * 100).toFixed(1) + "%")),
        h("div", {}, h("span", {}, "bad / allowed"), h("strong", {}, `${fmt.num(b.spentRequests)} / ${fmt.num(b.allowedRequests)}`)),
        h("div", {}, h("span", {}, "requests"), h("strong", {}, fmt.num(o.total)))),
      budgetBar(b.remaining), burnRows,
      h("div", { class: "reason" }, o.reason + observed)));
  }
}

// ---------------------------------------------------------------- traces
// /api/v1/traces (telemetry/traces.py): summaries and spans with snake_case fields.
const spanStart = (sp) => sp.start_ns != null ? Number(sp.start_ns) / 1e6 : Number(sp.startMs ?? sp.start_ms ?? sp.startTime ?? 0);
const spanDur = (sp) => Number(sp.duration_ms ?? sp.durationMs ?? (sp.end_ns != null ? (sp.end_ns - sp.start_ns) / 1e6 : 0));
const spanSvc = (sp) => (sp.service ?? sp.workload ?? "").split(".")[0];
const traceId = (t) => t.trace_id ?? t.traceId ?? t.id;
const spanErr = (sp) => Boolean(sp.error) || Number(sp.status ?? 0) >= 500;

async function refreshTraces() {
  let list;
  try { list = await api("/api/v1/traces?limit=30"); } catch (e) {
    table($("#trace-list"), [], [], { empty: "Traces are not available from this control plane." });
    return;
  }
  const traces = Array.isArray(list) ? list : list.traces || [];
  table($("#trace-list"), [
    { title: "Root", cell: (t) => h("span", {}, h("b", {}, (t.root_service ?? t.rootService ?? "").split(".")[0]), " ", t.root ?? t.name ?? "") },
    { title: "Services", cell: (t) => (t.services || []).map((x) => h("span", { class: "chip" }, x.split(".")[0])) },
    // multi-cluster: where the trace's spans were reported
    ...(traces.some((t) => t.clusters) ? [{ title: "Clusters", cell: (t) => (t.clusters || []).map((c) => h("span", { class: "chip" }, c || "this")) }] : []),
    { title: "Spans", num: true, cell: (t) => Array.isArray(t.spans) ? t.spans.length : t.spans ?? "" },
    { title: "Duration", num: true, cell: (t) => fmt.ms(t.duration_ms ?? t.durationMs) },
    { title: "", cell: (t) => t.errors ? h("span", { class: "badge b-crit" }, "error") : "" },
  ], traces, { empty: "No traces yet.", onClick: (t) => { state.trace = traceId(t); refreshTraces(); }, selected: (t) => traceId(t) === state.trace });
  if (!state.trace && traces.length) state.trace = traceId(traces[0]);
  if (state.trace) await drawWaterfall(state.trace);
}

async function drawWaterfall(id) {
  const el = $("#waterfall");
  $("#trace-id").textContent = id;
  let trace;
  try { trace = await api(`/api/v1/traces/${encodeURIComponent(id)}`); } catch (e) { el.replaceChildren(h("div", { class: "empty" }, "Trace not found.")); return; }
  const spans = (Array.isArray(trace) ? trace : trace.spans || []).slice();
  if (!spans.length) { el.replaceChildren(h("div", { class: "empty" }, "No spans.")); return; }
  const idOf = (sp) => sp.span_id ?? sp.spanId, parentOf = (sp) => sp.parent_span_id ?? sp.parentSpanId ?? "";
  const children = new Map();
  for (const sp of spans) { const p = parentOf(sp); (children.get(p) || children.set(p, []).get(p)).push(sp); }
  const ids = new Set(spans.map(idOf));
  const ordered = [];
  const walk = (sp, depth) => { ordered.push([sp, depth]); (children.get(idOf(sp)) || []).sort((a, b) => spanStart(a) - spanStart(b)).forEach((c) => walk(c, depth + 1)); };
  spans.filter((sp) => !ids.has(parentOf(sp))).sort((a, b) => spanStart(a) - spanStart(b)).forEach((r) => walk(r, 0));
  const t0 = Math.min(...spans.map(spanStart)), t1 = Math.max(...spans.map((sp) => spanStart(sp) + spanDur(sp)));
  const total = Math.max(t1 - t0, 0.001);
  el.replaceChildren(...ordered.map(([sp, depth]) => h("div", { class: "wf-row" },
    h("div", { class: "wf-name", style: `padding-left:${depth * 14}px`, title: sp.name ?? sp.operationName ?? "" }, h("span", { class: "svc" }, spanSvc(sp) + " "), sp.name ?? sp.operationName ?? ""),
    h("div", { class: "wf-track" }, h("div", { class: "wf-bar" + (spanErr(sp) ? " err" : ""), style: `left:${((spanStart(sp) - t0) / total * 88).toFixed(2)}%;width:${(spanDur(sp) / total * 88).toFixed(2)}%` }, h("span", {}, fmt.ms(spanDur(sp))))))));
}

// ---------------------------------------------------------------- proxies & config
async function refreshProxies() {
  const { proxies } = await api("/api/v1/proxies");
  const typeState = (p, t) => { const x = (p.types || []).find((y) => y.type === t); if (!x) return h("span", { class: "badge b-muted" }, "–"); if (x.nack) return h("span", { class: "badge b-crit", title: x.nack.message }, "NACKED"); return x.acked_version && x.acked_version === x.want_version ? h("span", { class: "badge b-ok" }, "SYNCED") : h("span", { class: "badge b-warn" }, "STALE"); };
  table($("#proxy-table"), [
    { title: "Proxy", cell: (p) => h("b", {}, p.node_id) },
    { title: "Status", cell: (p) => { const st = p.connected === false ? "DISCONNECTED" : p.sync || "?"; return h("span", { class: "badge " + (st === "SYNCED" ? "b-ok" : st === "NACKED" || st === "DISCONNECTED" ? "b-crit" : "b-warn") }, st); } },
    ...["CDS", "EDS", "LDS", "RDS"].map((t) => ({ title: t, cell: (p) => typeState(p, t) })),
    { title: "Stream", cell: (p) => p.flavour || "" },
  ], proxies, { empty: "No sidecars connected." });
}

function yamlish(v, ind = "") {
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) return v.length ? v.map((x) => `\n${ind}- ${yamlish(x, ind + "  ").trimStart()}`).join("") : "[]";
  const keys = Object.keys(v);
  return keys.length ? keys.map((k) => `\n${ind}${k}:` + (v[k] !== null && typeof v[k] === "object" && Object.keys(v[k]).length ? yamlish(v[k], ind + "  ") : " " + yamlish(v[k], ind + "  "))).join("") : "{}";
}

async function refreshConfig() {
  const { revision, items } = await api("/api/v1/resources");
  $("#config-rev").textContent = `revision ${revision}`;
  // Gateway API kinds by their group: its Gateway and Istio's share the kind name
  const kind = (r) => (r.apiVersion.startsWith("gateway.networking.k8s.io/") ? `${r.kind}.gateway.networking.k8s.io` : r.kind);
  const key = (r) => `${kind(r)}/${r.metadata.namespace}/${r.metadata.name}`;
  items.sort((a, b) => key(a).localeCompare(key(b)));
  table($("#config-table"), [
    { title: "Kind", cell: (r) => kind(r) }, { title: "Namespace", cell: (r) => r.metadata.namespace },
    { title: "Name", cell: (r) => h("b", {}, r.metadata.name) }, { title: "Rev", num: true, cell: (r) => r.metadata.resourceVersion ?? "" },
  ], items, { empty: "Nothing applied.", onClick: (r) => { state.resource = key(r); refreshConfig(); }, selected: (r) => key(r) === state.resource });
  const chosen = items.find((r) => key(r) === state.resource) || items[0];
  if (chosen) { $("#config-title").textContent = key(chosen); $("#config-body").textContent = yamlish(chosen).trimStart(); }
}

// ---------------------------------------------------------------- loop
const PAGES = { overview: refreshOverview, services: refreshServices, slos: refreshSlos, traces: refreshTraces, proxies: refreshProxies, config: refreshConfig };
let timer = null;
async function refresh() {
  clearTimeout(timer);
  try {
    await PAGES[state.page]();
    $("#live").classList.remove("stale");
    $("#status-line").textContent = `updated ${new Date().toLocaleTimeString()} · refreshes every ${POLL_MS / 1000}s`;
  } catch (e) {
    $("#live").classList.add("stale");
    if (e instanceof AuthError) {  // no polling without a credential
      $("#status-line").textContent = `not signed in: ${e.message}`;
      document.body.dataset.ready = "1";
      showLogin(e.message);
      return;
    }
    $("#status-line").textContent = `cannot reach the control plane: ${e.message}`;
  }
  document.body.dataset.ready = "1";
  timer = setTimeout(refresh, POLL_MS);
}
function route() {
  state.page = (location.hash || "#overview").slice(1).split("?")[0];
  if (!PAGES[state.page]) state.page = "overview";
  document.querySelectorAll(".page").forEach((p) => p.classList.toggle("active", p.id === "page-" + state.page));
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === state.page));
  refresh();
}
window.addEventListener("hashchange", route);
$("#window").addEventListener("change", () => { state.topo = null; refresh(); });
$("#service-pick").addEventListener("change", (e) => { state.service = e.target.value; refresh(); });
$("#theme").addEventListener("click", () => {
  const t = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = t; localStorage.setItem("shoal-theme", t);
});
document.documentElement.dataset.theme = new URLSearchParams(location.search).get("theme") || localStorage.getItem("shoal-theme") || "dark";
route();
