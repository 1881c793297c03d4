"use strict";
// What every view shares: state, DOM helpers, the API client (with the token rules),
// times and durations, the event feed, and the router (views by URL hash).

const S = {
  token: localStorage.getItem("koan.token") || "",
  services: [], info: {}, open: new Set(),
  events: [], seen: new Set(), es: null,
  view: null, timer: null,
};
const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined && k !== false) e.append(k);
  return e;
};
const enc = encodeURIComponent;

function ago(iso) {
  if (!iso) return "—";
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
  const a = Math.abs(s), txt = a < 60 ? a + "s" : a < 3600 ? Math.round(a / 60) + "m" : a < 86400 ? Math.round(a / 3600) + "h" : Math.round(a / 86400) + "d";
  return s >= 0 ? "in " + txt : txt + " ago";
}
function when(iso) { return iso ? new Date(iso).toLocaleString() : "—"; }
function dur(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  return Math.floor(ms / 60000) + " m " + Math.round((ms % 60000) / 1000) + " s";
}
function json(v) { return el("pre", { class: "json", text: JSON.stringify(v, null, 2) }); }
function notice(text) { $("#notice").textContent = text || ""; }

function askToken(message) {
  const t = prompt((message || "This API needs a token.") + "\nBearer token:", S.token);
  if (t === null) return false;
  S.token = t.trim(); localStorage.setItem("koan.token", S.token); connectEvents(); return true;
}
async function api(path, opts = {}, retried = false) {
  const headers = Object.assign({ "accept": "application/json" }, opts.headers || {});
  if (S.token) headers["authorization"] = "Bearer " + S.token;
  const res = await fetch(path, Object.assign({}, opts, { headers }));
  const text = await res.text();
  let body; try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (res.status === 401 && !retried && askToken(body && body.message)) return api(path, opts, true);
  if (!res.ok) { const e = new Error((body && body.message) || res.statusText); e.kind = body && body.error; e.status = res.status; throw e; }
  return body;
}
function post(path, body) {
  const opts = { method: "POST" };
  if (body !== undefined) { opts.headers = { "content-type": "application/json" }; opts.body = JSON.stringify(body); }
  return api(path, opts);
}

// ---- The event feed: the host's recent events, then the live stream. ----
function keyOf(e) { return e.service + "#" + e.seq + "#" + e.time; }
function addEvent(e, front) {
  const k = keyOf(e);
  if (S.seen.has(k)) return false;
  S.seen.add(k);
  if (front) S.events.unshift(e); else S.events.push(e);
  if (S.events.length > 500) { for (const old of S.events.splice(500)) S.seen.delete(keyOf(old)); }
  return true;
}
async function loadRecentEvents() {
  try {
    const recent = await api("/api/events/recent");
    let added = false;
    for (const e of recent) added = addEvent(e, false) || added;
    S.events.sort((a, b) => Date.parse(b.time) - Date.parse(a.time) || b.seq - a.seq);
    if (added && S.view && S.view.onEvent) S.view.onEvent();
  } catch (e) { notice("recent events: " + e.message); }
}
function connectEvents() {
  if (S.es) S.es.close();
  const url = "/api/events" + (S.token ? "?token=" + enc(S.token) : "");
  S.es = new EventSource(url);
  S.es.onmessage = (m) => {
    let e; try { e = JSON.parse(m.data); } catch { return; }
    if (!addEvent(e, true)) return;
    if (S.view && S.view.onEvent) S.view.onEvent(e);
  };
  S.es.onerror = () => notice("event stream interrupted; reconnecting…");
  S.es.onopen = () => { notice(""); loadRecentEvents(); };
}
// One event as a list item; one with a correlation id links to the job it ran under.
function eventItem(e) {
  const link = e.correlation_id
    ? el("a", { href: "#/jobs?correlation_id=" + enc(e.correlation_id), class: "job-link", "data-correlation": e.correlation_id, title: "the job that ran under this correlation id", text: "job…" })
    : null;
  return el("li", { "data-event": e.event, "data-service": e.service },
    el("span", { class: "ev", text: e.event }), " ",
    el("span", { class: "meta", text: `${e.service} · ${new Date(e.time).toLocaleTimeString()}${e.correlation_id ? " · " + e.correlation_id : ""} ` }),
    link, el("code", { text: JSON.stringify(e.payload) }));
}

// ---- The router: `#/`, `#/services/NAME`, `#/jobs?…`, `#/jobs/ID`, `#/cluster`. ----
const ROUTES = [];
function route(pattern, nav, make) { ROUTES.push({ pattern, nav, make }); }
function go(hash) { if (location.hash === hash) show(); else location.hash = hash; }
function show() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, qs] = raw.split("?");
  const params = new URLSearchParams(qs || "");
  if (S.timer) { clearInterval(S.timer); S.timer = null; }
  if (S.view && S.view.close) S.view.close();
  for (const r of ROUTES) {
    const m = path.match(r.pattern);
    if (!m) continue;
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.nav === r.nav);
    const main = $("#view");
    main.className = "";
    main.replaceChildren();
    main.dataset.view = r.nav;
    S.view = r.make(main, m.slice(1).map(decodeURIComponent), params) || {};
    if (S.view.refresh) { S.view.refresh(); S.timer = setInterval(() => S.view.refresh(), S.view.every || 2000); }
    return;
  }
  go("#/");
}
async function refreshHealth() {
  const h = await fetch("/health").then((r) => r.json()).catch(() => null);
  const badge = $("#overall-health");
  const status = h ? h.status : "fail";
  badge.textContent = { pass: "healthy", warn: "degraded", fail: "unhealthy" }[status] || status;
  badge.className = "badge " + status;
}
