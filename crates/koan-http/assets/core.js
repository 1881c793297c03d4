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
// Unicode's bidirectional controls, shown as escapes: obeyed, a job's "\u202eRTL\u202c"
// read as "LTR" (seen in a probe).
const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const visible = (v) => v === null || v === undefined ? "" : String(v).replace(BIDI, (c) => "\\u{" + c.codePointAt(0).toString(16) + "}");
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = visible(v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined && k !== false) e.append(typeof k === "string" ? visible(k) : k);
  return e;
};
const enc = encodeURIComponent;

function ago(iso) {
  if (!iso) return "—";
  // Within a second either way, "now": a run 0.4 s old read "in 0s", as if to come.
  const ms = Date.parse(iso) - Date.now();
  if (Math.abs(ms) < 1000) return "now";
  const s = Math.round(ms / 1000);
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
// A view's own state (what its last refresh found): each refresh writes it again.
function notice(text) { $("#notice").textContent = visible(text); }
// What the event stream is doing, when it is not streaming.
function streamStatus(text) { $("#stream-status").textContent = visible(text); }
// What an operator's action did: kept until the next action or a dismissal (a
// view's refresh cleared it within 10 ms when it shared the notice).
function outcome(text, ok) {
  const box = $("#outcome");
  box.replaceChildren();
  box.hidden = !text;
  box.className = ok ? "ok" : "err";
  if (text) box.append(el("span", { text }), el("button", { type: "button", class: "dismiss", title: "dismiss", "aria-label": "dismiss", onclick: () => outcome("") }, "×"));
}

// A prompt the operator cancelled is not asked again at every refresh: the
// "Set token" button asks.
function askToken(message) {
  // Not pre-filled: the stored token is not shown in clear (a probe).
  const t = prompt((message || "This API needs a token.") + "\nBearer token:", "");
  // Nothing given counts as cancelled: an empty answer was taken as a token, refused,
  // and asked for again at once (213 prompts in 5 s; found by a probe).
  if (t === null || !t.trim()) { S.tokenRefused = true; return false; }
  S.tokenRefused = false;
  S.askedFor = t.trim();
  S.token = t.trim(); localStorage.setItem("koan.token", S.token); connectEvents(); return true;
}
// Asked by a refusal (not the button): once for each token given. A token the host
// refused was asked for again at once, for ever (1,782 prompts in 20 s, each with
// the same words; found by a probe): it is now said to be refused, once.
function askAgain(message) {
  if (S.tokenRefused) return false;
  if (S.token && S.askedFor === S.token) return false;
  return askToken(S.token ? "The host refused this token." : "This host's API needs a token.");
}
async function api(path, opts = {}, retried = false) {
  const headers = Object.assign({ "accept": "application/json" }, opts.headers || {});
  if (S.token) headers["authorization"] = "Bearer " + S.token;
  const res = await fetch(path, Object.assign({}, opts, { headers }));
  const text = await res.text();
  let body; try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (res.status === 401 && !retried && askAgain(body && body.message)) return api(path, opts, true);
  if (!res.ok) {
    const said = (body && body.message) || res.statusText;
    const e = new Error(res.status === 401 ? said + " (use “Set token”)" : said);
    e.kind = body && body.error; e.status = res.status; throw e;
  }
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
  // Cut once, as it comes: the feed re-rendered every payload whole at each event
  // (a peer's 900 KB events held 400 MB of the tab; a probe).
  e.short = shortJson(e.payload);
  delete e.payload;
  if (front) S.events.unshift(e); else S.events.push(e);
  if (S.events.length > 500) { for (const old of S.events.splice(500)) S.seen.delete(keyOf(old)); }
  return true;
}
async function loadRecentEvents() {
  try {
    const recent = await api("/api/events/recent?limit=200");
    let added = false;
    for (const e of recent) added = addEvent(e, false) || added;
    S.events.sort((a, b) => Date.parse(b.time) - Date.parse(a.time) || b.seq - a.seq);
    if (added && S.view && S.view.onEvent) S.view.onEvent();
  } catch (e) { notice("recent events: " + e.message); }
}
const stream = { retry: null, backoff: 2000 };
function connectEvents() {
  if (S.es) S.es.close();
  if (stream.retry) { clearTimeout(stream.retry); stream.retry = null; }
  const url = "/api/events" + (S.token ? "?token=" + enc(S.token) : "");
  const es = new EventSource(url);
  S.es = es;
  es.onmessage = (m) => {
    let e; try { e = JSON.parse(m.data); } catch { return; }
    if (!addEvent(e, true)) return;
    if (S.view && S.view.onEvent) S.view.onEvent(e);
  };
  // Interrupted, the browser reconnects by itself; refused (an answer other than
  // 200: a token needed, every stream slot taken), it gives up for good, and the
  // feed went silently empty.
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) streamRefused(es);
    else streamStatus("event stream interrupted; reconnecting…");
  };
  es.onopen = () => { streamStatus(""); stream.backoff = 2000; loadRecentEvents(); };
}
// Says why the stream was refused (the browser does not tell: the host is asked),
// asks for a token when that is why, and tries again later otherwise.
async function streamRefused(es) {
  const headers = S.token ? { authorization: "Bearer " + S.token } : {};
  const r = await fetch("/api/events/recent?limit=1", { headers }).catch(() => null);
  if (S.es !== es) return;
  if (r && r.status === 401) {
    streamStatus(S.token
      ? "event stream refused: the host refused this token (use “Set token”)"
      : "event stream refused: the host needs a token (use “Set token”)");
    askAgain("The event stream needs a token.");
    return;
  }
  const secs = Math.round(stream.backoff / 1000);
  streamStatus(r ? `event stream refused by the host (every stream slot taken, or it is stopping); trying again in ${secs} s` : `cannot reach the host; trying again in ${secs} s`);
  stream.retry = setTimeout(connectEvents, stream.backoff);
  stream.backoff = Math.min(stream.backoff * 2, 60000);
}
// One event as a list item; one with a correlation id links to the job it ran under.
function eventItem(e) {
  const link = e.correlation_id
    ? el("a", { href: "#/jobs?correlation_id=" + enc(e.correlation_id), class: "job-link", "data-correlation": e.correlation_id, title: "the job that ran under this correlation id", text: "job…" })
    : null;
  return el("li", { "data-event": e.event, "data-service": e.service },
    el("span", { class: "ev", text: e.event }), " ",
    el("span", { class: "meta", text: `${e.service} · ${new Date(e.time).toLocaleTimeString()}${e.correlation_id ? " · " + e.correlation_id : ""} ` }),
    link, el("code", { text: e.short }));
}
// A payload as the feed shows it: at most 500 characters (a feed of 58 KB payloads
// froze the tab at each event); the job's or the API's page has it whole.
function shortJson(v) {
  const text = JSON.stringify(v) ?? "null";
  return text.length <= 500 ? text : text.slice(0, 500) + `… (${text.length} characters)`;
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
    let args;
    try { args = m.slice(1).map(decodeURIComponent); }
    catch { outcome(`the address ${location.hash} is not valid (a malformed %-escape)`, false); go("#/"); return; }
    S.view = r.make(main, args, params) || {};
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
