"use strict";
// The overview (throughput, services, events) and a service's page (its history as
// a timeline and a duration chart, its actions).

function workCount(s) {
  // A background service's run lasts as long as the host: its work is its actions.
  if (s.kind === "background") {
    const n = (s.actions_succeeded || 0) + (s.actions_failed || 0);
    return { runs: `${n} action${n === 1 ? "" : "s"}`, failures: String(s.failures + (s.actions_failed || 0)) };
  }
  return { runs: String(s.runs), failures: String(s.failures) };
}

function overview(main) {
  main.className = "";
  const tp = throughputPanel();
  const table = el("table", { class: "services", id: "services" },
    el("thead", {}, el("tr", {}, ...["Service", "Kind", "State", "Health", "Last run", "Next run", "Runs", "Failures", "Mailbox", ""].map((t) => el("th", { text: t, title: t === "Mailbox" ? "actions running or waiting in the service's mailbox; stored jobs are counted under Jobs" : undefined })))),
    el("tbody"));
  const svcSel = el("select", { id: "filter-service", "aria-label": "Filter by service" }, el("option", { value: "", text: "all services" }));
  const nameIn = el("input", { id: "filter-event", placeholder: "event name contains…", "aria-label": "Filter by event" });
  const list = el("ul", { id: "events", class: "feed" });
  main.append(tp.section,
    el("section", {}, el("h2", { text: "Services" }), el("div", { class: "scroll" }, table)),
    el("section", {}, el("h2", { text: "Events" }),
      el("div", { class: "filters" }, svcSel, nameIn,
        el("button", { id: "clear-events", type: "button", onclick: () => { S.events = []; S.seen.clear(); renderEvents(); } }, "Clear")),
      list));
  svcSel.addEventListener("change", renderEvents);
  nameIn.addEventListener("input", renderEvents);
  function renderEvents() {
    const svc = svcSel.value, name = nameIn.value.trim().toLowerCase();
    const shown = S.events.filter((e) => (!svc || e.service === svc) && (!name || e.event.toLowerCase().includes(name)));
    list.replaceChildren(...shown.slice(0, 200).map(eventItem));
  }
  async function refresh() {
    try {
      S.services = await api("/api/services");
      notice("");
      renderServices(table.tBodies[0], svcSel);
    } catch (e) { notice(e.status === 401 ? e.message : "cannot reach the host: " + e.message); }
    tp.refresh();
  }
  renderEvents();
  let soon = null;
  return {
    refresh,
    onEvent() { renderEvents(); clearTimeout(soon); soon = setTimeout(refresh, 300); },
    close() { clearTimeout(soon); },
  };
}

function renderServices(tbody, sel) {
  const chosen = sel.value;
  // Each name once: in a cluster a service is listed once per host (a re-probe).
  const names = [...new Set(S.services.map((s) => s.name))];
  if (sel.options.length - 1 !== names.length) {
    sel.replaceChildren(el("option", { value: "", text: "all services" }), ...names.map((n) => el("option", { value: n, text: n })));
    sel.value = chosen;
  }
  // Updated in place: each service's row is swapped for a fresh one only when what it
  // shows changed, and an open row of forms is never moved or rebuilt, so typing in a
  // form or clicking its buttons is not disturbed by the refreshes that events cause.
  // Keyed by service and host: in a cluster a service runs on several, and keyed by
  // name alone a remote row never found its own, so a fresh one was added at every
  // refresh (2,962 rows for 10 services in 20 minutes, a departed host's still shown
  // running; a probe).
  const rows = new Map([...tbody.querySelectorAll("tr.row")].map((r) => [r.dataset.id, r]));
  const details = new Map([...tbody.querySelectorAll("tr.detail")].map((r) => [r.dataset.for, r]));
  let prev = null;
  for (const s of S.services) {
    const id = rowId(s);
    const last = s.last_run ? `${s.last_run.outcome} · ${ago(s.last_run.started_at)} · ${s.last_run.duration_ms}ms` : "—";
    const buttons = el("div", { class: "actions" });
    if (s.actions.includes("trigger")) buttons.append(el("button", { type: "button", "data-action": "trigger", onclick: () => poke(s.name, "trigger") }, "Trigger"));
    if (s.actions.includes("process-batch")) buttons.append(el("button", { type: "button", "data-action": "process-batch", onclick: () => toggle(id) }, "Process batch…"));
    const custom = s.actions.filter((a) => !["trigger", "check-queue", "process-batch"].includes(a));
    if (custom.length || s.actions.includes("check-queue")) buttons.append(el("button", { type: "button", "data-action": "details", onclick: () => toggle(id) }, S.open.has(id) ? "Hide actions" : "Actions…"));
    const work = workCount(s);
    const name = s.remote ? el("div", { class: "name", text: s.name }) : el("a", { class: "name", href: "#/services/" + enc(s.name), text: s.name });
    const row = el("tr", { class: "row", "data-id": id, "data-service": s.name, "data-remote": s.remote ? "1" : null },
      el("td", { class: "first" }, name, s.description ? el("div", { class: "desc", text: s.description }) : null,
        s.remote ? el("div", { class: "desc", text: "on host " + s.host + (s.stale ? " · stale: its heartbeat is late, this is what it last announced" : "") }) : null),
      el("td", { "data-label": "kind", text: s.kind + (s.schedule ? " · " + s.schedule : "") }),
      el("td", { "data-label": "state", "data-field": "state", class: "state-" + s.state, text: s.state }),
      el("td", { "data-label": "health" }, el("span", { class: "badge " + s.health, "data-field": "health", text: s.health })),
      el("td", { "data-label": "last run", text: last }),
      el("td", { "data-label": "next run", text: ago(s.next_run) }),
      el("td", { "data-label": s.kind === "background" ? "work" : "runs", class: "num", "data-field": "runs", text: work.runs }),
      el("td", { "data-label": "failures", class: "num", "data-field": "failures", text: work.failures }),
      el("td", { "data-label": "queue", class: "num", "data-field": "queue", text: String(s.queue_depth + s.in_flight) }),
      el("td", { class: "actions-cell" }, buttons));
    const key = JSON.stringify([s, S.open.has(id), last, ago(s.next_run)]);
    let current = rows.get(id);
    rows.delete(id);
    if (!current) {
      current = row;
      if (prev) prev.after(current); else tbody.prepend(current);
    } else if (current.dataset.key !== key) {
      current.replaceWith(row);
      current = row;
    }
    current.dataset.key = key;
    prev = current;
    if (S.open.has(id)) {
      let d = details.get(id);
      details.delete(id);
      if (!d) d = detailRow(s, id);
      if (prev.nextElementSibling !== d) prev.after(d);
      prev = d;
    }
  }
  for (const gone of [...rows.values(), ...details.values()]) gone.remove();
}
/** A service's row's identity: its name, and for a remote one its host. */
function rowId(s) { return s.remote ? `${s.name}@${s.host}` : s.name; }
function toggle(id) { S.open.has(id) ? S.open.delete(id) : S.open.add(id); if (S.view.refresh) S.view.refresh(); }
function detailRow(s, id) {
  const cell = el("td", { colspan: "10" });
  const row = el("tr", { class: "detail", "data-for": id }, cell);
  actionForms(s.name, cell);
  return row;
}
function actionForms(service, into) {
  const load = S.info[service] ? Promise.resolve(S.info[service]) : api("/api/services/" + enc(service)).then((i) => (S.info[service] = i));
  load.then((info) => { for (const a of info.actions) if (a.name !== "trigger") into.append(actionForm(service, a)); })
    .catch((e) => into.append(el("div", { class: "result err", text: e.message })));
}
function resolveSchema(schema, root) {
  if (schema && schema.$ref && root) { const key = schema.$ref.split("/").pop(); return (root.$defs || root.definitions || {})[key] || {}; }
  return schema || {};
}
function typeOf(schema) { const t = schema.type; return Array.isArray(t) ? t.find((x) => x !== "null") : t; }
function inputFor(name, schema, required) {
  const t = typeOf(schema);
  const id = "f-" + Math.random().toString(36).slice(2);
  let input;
  if (t === "boolean") input = el("input", { type: "checkbox", id, name });
  else if (t === "integer" || t === "number") input = el("input", { type: "number", id, name, step: t === "integer" ? "1" : "any", placeholder: required ? "required" : "optional" });
  else if (t === "string" && schema.enum) input = el("select", { id, name }, ...schema.enum.map((v) => el("option", { value: v, text: v })));
  else if (t === "string") input = el("input", { type: "text", id, name, placeholder: required ? "required" : "optional" });
  else input = el("textarea", { id, name, "data-json": "1", placeholder: "JSON" });
  input.dataset.type = t || "json";
  return el("div", { class: "field" }, el("label", { for: id, text: name + (required ? " *" : "") }), input);
}
function readInput(input) {
  if (input.type === "checkbox") return input.checked;
  const v = input.value.trim();
  if (v === "") return undefined;
  if (input.dataset.type === "integer" || input.dataset.type === "number") return Number(v);
  if (input.dataset.json) return JSON.parse(v);
  return v;
}
function actionForm(service, action) {
  const schema = action.params_schema || null;
  const form = el("form", { class: "action", "data-action-form": action.name });
  form.append(el("div", { class: "name", text: action.name }), action.description ? el("div", { class: "desc", text: action.description }) : null);
  let mode = "none";
  if (schema) {
    const s = resolveSchema(schema, schema);
    if (typeOf(s) === "object" && s.properties) {
      mode = "object";
      const req = new Set(s.required || []);
      for (const [k, v] of Object.entries(s.properties)) form.append(inputFor(k, resolveSchema(v, schema), req.has(k)));
    } else { mode = "single"; form.append(inputFor("value", s, false)); }
  }
  const out = el("div", { class: "result" });
  const later = el("button", { type: "button", "data-enqueue": "1" }, "Enqueue as a job");
  form.append(el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Run " + action.name), later), out);
  const body = () => {
    if (mode === "object") { const b = {}; for (const i of form.querySelectorAll("input,select,textarea")) { const v = readInput(i); if (v !== undefined) b[i.name] = v; } return b; }
    if (mode === "single") { const v = readInput(form.querySelector("input,select,textarea")); return v === undefined ? null : v; }
    return null;
  };
  async function send(wait) {
    out.className = "result"; out.textContent = wait ? "running…" : "enqueueing…";
    let b;
    try { b = body(); } catch (e) { out.className = "result err"; out.textContent = "invalid input: " + e.message; return; }
    try {
      const r = await post(`/api/services/${enc(service)}/actions/${enc(action.name)}${wait ? "" : "?wait=false"}`, b);
      if (wait) out.textContent = visible(JSON.stringify(r.result, null, 2));
      else out.replaceChildren("job ", el("a", { href: "#/jobs/" + enc(r.id), "data-job": r.id, text: r.id }));
      if (S.view.refresh) S.view.refresh();
    } catch (e) { out.className = "result err"; out.textContent = visible((e.kind ? e.kind + ": " : "") + e.message); }
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); send(true); });
  later.addEventListener("click", () => send(false));
  return form;
}
async function poke(service, action) {
  try { await post(`/api/services/${enc(service)}/${action}?wait=true`); outcome(`${action} of ${service}: its run finished`, true); }
  catch (e) { outcome(`${action} of ${service}: ${e.message}`, false); }
  if (S.view.refresh) S.view.refresh();
}

// ---- A service's page. ----
function servicePage(main, [name]) {
  main.className = "single";
  const head = el("section", { id: "service-page", "data-service": name }, el("h2", { text: name }));
  const facts = el("dl", { class: "facts" });
  const charts = el("div", { class: "stack" });
  const runs = el("table", { class: "runs", id: "runs" }, el("thead", {}, el("tr", {}, ...["Started", "Reason", "Duration", "Outcome"].map((t) => el("th", { text: t })))), el("tbody"));
  const forms = el("div");
  const events = el("ul", { id: "service-events", class: "feed" });
  const trigger = el("button", { type: "button", "data-action": "trigger", hidden: "" }, "Trigger now");
  trigger.addEventListener("click", () => poke(name, "trigger"));
  head.append(facts, el("div", { class: "actions" }, trigger, el("a", { href: "#/jobs?service=" + enc(name), text: "Jobs of " + name + " →" })));
  main.append(head,
    el("section", {}, el("h2", { text: "History" }), el("div", { class: "legend" }, el("span", { class: "ok", text: "■ success" }), el("span", { class: "bad", text: "■ failed" })), charts,
      el("div", { class: "scroll" }, runs)),
    el("section", {}, el("h2", { text: "Actions" }), forms),
    el("section", {}, el("h2", { text: "Its recent events" }), events));
  actionForms(name, forms);
  const renderEvents = () => {
    const mine = S.events.filter((e) => e.service.toLowerCase() === name.toLowerCase()).slice(0, 50);
    events.replaceChildren(...(mine.length ? mine.map(eventItem) : [el("li", { class: "desc", text: "none among the host's last events" })]));
  };
  renderEvents();
  async function refresh() {
    try {
      const [st, h] = await Promise.all([api(`/api/services/${enc(name)}/status`), api(`/api/services/${enc(name)}/history`)]);
      if (st.kind === "periodic") trigger.removeAttribute("hidden");
      facts.replaceChildren(...[["kind", st.kind], ["state", st.state], ["started", when(st.started_at)], ["next run", ago(st.next_run)],
        ["runs", `${st.runs} (${st.failures} failed)`], ["actions", `${h.actions_succeeded} succeeded, ${h.actions_failed} failed`],
        ["restarts", st.restarts], ["last error", st.last_error || "—"]].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-fact": k, text: String(v) })]));
      const oldest = h.runs.slice().reverse();
      charts.replaceChildren(el("div", { class: "desc", text: `last ${h.runs.length} of at most ${h.capacity} runs` }), timelineChart(oldest), durationChart(oldest));
      runs.tBodies[0].replaceChildren(...h.runs.map((r) => el("tr", { "data-outcome": r.outcome },
        el("td", { "data-label": "started", text: when(r.started_at) }), el("td", { "data-label": "reason", text: r.reason }),
        el("td", { "data-label": "duration", text: dur(r.duration_ms) }),
        el("td", { "data-label": "outcome", class: outcomeClass(r) === "bad" ? "state-failed" : "", text: r.outcome + (r.error ? ": " + r.error : r.message ? ": " + r.message : "") }))));
      notice("");
    } catch (e) { notice(name + ": " + e.message); }
  }
  return { refresh, onEvent: renderEvents };
}

route(/^\/$/, "services", overview);
route(/^\/services\/([^/]+)$/, "services", servicePage);
