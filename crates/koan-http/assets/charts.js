"use strict";
// Hand-written SVG charts: stacked succeeded/failed bars over time, a run timeline,
// and run durations. Each returns an <svg> sized by its viewBox (it scales with the
// window).

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...kids) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, v);
  for (const k of kids) if (k) e.append(k);
  return e;
}
function titled(node, text) { node.append(svg("title", {}, visible(text))); return node; }

// Succeeded (green) and failed (red) stacked per bucket; `label(bucket)` names a tick.
function throughputChart(buckets, { width = 600, height = 140, label, tickEvery, name }) {
  const pad = { l: 28, b: 16, t: 6 };
  const max = Math.max(1, ...buckets.map((b) => b.succeeded + b.failed));
  const w = (width - pad.l) / Math.max(1, buckets.length);
  const h = height - pad.b - pad.t;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": name, "data-chart": name });
  root.append(svg("line", { x1: pad.l, y1: pad.t + h, x2: width, y2: pad.t + h, class: "axis" }));
  root.append(svg("text", { x: 2, y: pad.t + 8 }, String(max)));
  root.append(svg("text", { x: 2, y: pad.t + h }, "0"));
  buckets.forEach((b, i) => {
    const x = pad.l + i * w;
    const ok = (b.succeeded / max) * h, bad = (b.failed / max) * h;
    const what = `${label(b)}: ${b.succeeded} succeeded, ${b.failed} failed`;
    if (b.succeeded) root.append(titled(svg("rect", { x, y: pad.t + h - ok, width: Math.max(1, w - 1), height: ok, class: "ok" }), what));
    if (b.failed) root.append(titled(svg("rect", { x, y: pad.t + h - ok - bad, width: Math.max(1, w - 1), height: bad, class: "bad" }), what));
    if (i % tickEvery === 0) root.append(svg("text", { x, y: height - 3 }, label(b)));
  });
  return root;
}

function legend() {
  return el("div", { class: "legend" }, el("span", { class: "ok", text: "■ succeeded" }), el("span", { class: "bad", text: "■ failed" }));
}

const outcomeClass = (r) => r.outcome === "success" ? "ok" : r.outcome === "cancelled" ? "cancel" : "bad";
const runText = (r) => `${when(r.started_at)} · ${r.reason} · ${dur(r.duration_ms)} · ${r.outcome}${r.error ? ": " + r.error : r.message ? ": " + r.message : ""}`;

// Runs on a time axis (oldest left): one mark per run, as wide as its duration (at
// least 3 units), coloured by outcome.
function timelineChart(runs, { width = 1000, height = 60 } = {}) {
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": "run timeline", "data-chart": "timeline" });
  root.append(svg("line", { x1: 0, y1: height - 14, x2: width, y2: height - 14, class: "axis" }));
  if (!runs.length) { root.append(svg("text", { x: 4, y: 20 }, "no runs yet")); return root; }
  const start = (r) => Date.parse(r.started_at);
  const t0 = Math.min(...runs.map(start));
  const t1 = Math.max(...runs.map((r) => start(r) + r.duration_ms), t0 + 1000);
  const x = (t) => 4 + ((t - t0) / (t1 - t0)) * (width - 8);
  for (const r of runs) {
    const left = x(start(r)), w = Math.max(3, x(start(r) + r.duration_ms) - left);
    root.append(titled(svg("rect", { x: left, y: 8, width: w, height: height - 26, rx: 1, class: outcomeClass(r), "data-outcome": r.outcome }), runText(r)));
  }
  root.append(svg("text", { x: 4, y: height - 2 }, new Date(t0).toLocaleTimeString()));
  root.append(svg("text", { x: width - 4, y: height - 2, "text-anchor": "end" }, new Date(t1).toLocaleTimeString()));
  return root;
}

// One bar per run (oldest left), its height the run's duration.
function durationChart(runs, { width = 1000, height = 140 } = {}) {
  const pad = { l: 44, b: 4, t: 6 };
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": "run durations", "data-chart": "durations" });
  const max = Math.max(1, ...runs.map((r) => r.duration_ms));
  const h = height - pad.b - pad.t, w = Math.min(40, (width - pad.l) / Math.max(1, runs.length));
  root.append(svg("line", { x1: pad.l, y1: pad.t + h, x2: width, y2: pad.t + h, class: "axis" }));
  root.append(svg("text", { x: 2, y: pad.t + 8 }, dur(max)));
  root.append(svg("text", { x: 2, y: pad.t + h }, "0"));
  runs.forEach((r, i) => {
    const bh = Math.max(1, (r.duration_ms / max) * h);
    root.append(titled(svg("rect", { x: pad.l + i * w, y: pad.t + h - bh, width: Math.max(1, w - 2), height: bh, class: outcomeClass(r) }), runText(r)));
  });
  return root;
}

// The panel of the host's throughput: live per second, and per hour for the day.
function throughputPanel() {
  const box = el("div", { class: "charts" });
  const section = el("section", { class: "wide", id: "throughput" }, el("h2", { text: "Succeeded and failed work" }), legend(), box);
  async function refresh() {
    try {
      const t = await api("/api/stats/throughput");
      const secs = t.per_second.slice(-60);
      const sum = (bs, k) => bs.reduce((n, b) => n + b[k], 0);
      box.replaceChildren(
        el("div", {}, el("div", { class: "desc", "data-field": "per-second", text: `last minute, per second: ${sum(secs, "succeeded")} succeeded, ${sum(secs, "failed")} failed` }),
          throughputChart(secs, { name: "per-second", tickEvery: 15, label: (b) => new Date(b.start).toLocaleTimeString() })),
        el("div", {}, el("div", { class: "desc", "data-field": "per-hour", text: `last day, per hour: ${sum(t.per_hour, "succeeded")} succeeded, ${sum(t.per_hour, "failed")} failed (since this host started)` }),
          throughputChart(t.per_hour, { name: "per-hour", tickEvery: 6, label: (b) => new Date(b.start).getHours() + "h" })));
    } catch (e) { box.replaceChildren(el("div", { class: "result err", text: e.message })); }
  }
  return { section, refresh };
}
