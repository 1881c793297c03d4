"use strict";
// Jobs: counts and lists by state, filters by service and action, a search by job id
// or correlation id, paging; a job's page with its parameters, result or error,
// attempts, correlation id and events; retry, cancel, delete, and retry-all-dead (each
// asked to confirm).

const JOB_STATES = ["scheduled", "queued", "running", "succeeded", "retrying", "dead", "cancelled"];
const short = (id) => id.length > 13 ? "…" + id.slice(-12) : id;

function jobsPage(main, _m, params) {
  main.className = "single";
  // `found`: the correlation id came from the find box, which looked for a job of that id first.
  const f = { state: params.get("state") || "", service: params.get("service") || "", action: params.get("action") || "", correlation_id: params.get("correlation_id") || "", found: params.get("found") || "" };
  const cursors = [];  // the cursors of the pages before this one
  let cursor = null, next = null;
  const tabs = el("div", { class: "tabs", id: "job-tabs" });
  const svcSel = el("select", { id: "job-service", "aria-label": "Service" });
  const actIn = el("input", { id: "job-action", placeholder: "action", "aria-label": "Action", value: f.action });
  const findIn = el("input", { id: "job-find", type: "search", placeholder: "job id or correlation id", "aria-label": "Find a job by its id or correlation id", value: f.correlation_id });
  const tbody = el("tbody");
  const table = el("table", { class: "jobs", id: "jobs" },
    el("thead", {}, el("tr", {}, ...["Job", "Service · action", "State", "Attempts", "Created", "Run at / finished", ""].map((t) => el("th", { text: t })))), tbody);
  const older = el("button", { type: "button", id: "jobs-older" }, "Older →");
  const newer = el("button", { type: "button", id: "jobs-newer" }, "← Newer");
  const info = el("span", { class: "desc" });
  const retryDead = el("button", { type: "button", id: "retry-dead" }, "Retry all dead…");
  const store = el("div", { class: "desc" });
  main.append(el("section", {}, el("h2", { text: "Jobs" }), store, tabs,
    el("div", { class: "filters" }, svcSel, actIn, findIn, retryDead,
      f.correlation_id ? el("span", { class: "desc" }, "correlation ", el("code", { text: f.correlation_id }), " ", el("a", { href: "#/jobs", text: "(clear)" })) : null),
    el("div", { class: "scroll" }, table), el("div", { class: "pager" }, newer, older, info)));

  const hashFor = (over) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(Object.assign({}, f, over))) if (v) q.set(k, v);
    const s = q.toString();
    return "#/jobs" + (s ? "?" + s : "");
  };
  svcSel.addEventListener("change", () => go(hashFor({ service: svcSel.value })));
  actIn.addEventListener("change", () => go(hashFor({ action: actIn.value.trim() })));
  // A job id opens its page; anything else (or an id no job has) lists the jobs
  // under that correlation id.
  findIn.addEventListener("keydown", async (ev) => {
    if (ev.key !== "Enter") return;
    const v = findIn.value.trim();
    if (!v) { go(hashFor({ correlation_id: "" })); return; }
    const byCorrelation = () => go(hashFor({ correlation_id: v, state: "", service: "", action: "", found: "1" }));
    // (`counts` or `retry-dead` is another route under /api/jobs/: no job's answer.)
    try { const j = await api("/api/jobs/" + enc(v)); if (j && j.id === v) go("#/jobs/" + enc(j.id)); else byCorrelation(); }
    catch (e) {
      if ([400, 404, 405].includes(e.status)) byCorrelation();
      else notice("find: " + e.message);
    }
  });
  older.addEventListener("click", () => { if (next) { cursors.push(cursor); cursor = next; refresh(); } });
  newer.addEventListener("click", () => { if (cursors.length) { cursor = cursors.pop(); refresh(); } });
  retryDead.addEventListener("click", async () => {
    const scope = f.service ? ` of ${f.service}` : "";
    if (!confirm(`Retry every dead job${scope}?`)) return;
    try { const r = await post("/api/jobs/retry-dead" + (f.service ? "?service=" + enc(f.service) : "")); outcome(`${r.retried} dead job(s) queued again`, true); }
    catch (e) { outcome("retry-dead: " + e.message, false); }
    refresh();
  });

  async function refresh() {
    try {
      if (svcSel.options.length === 0) {
        const svcs = await api("/api/services");
        svcSel.replaceChildren(el("option", { value: "", text: "all services" }), ...svcs.filter((s) => !s.remote).map((s) => el("option", { value: s.name, text: s.name })));
        svcSel.value = f.service;
      }
      const counts = await api("/api/jobs/counts" + (f.service ? "?service=" + enc(f.service) : ""));
      store.textContent = `store: ${counts.store}${counts.durable ? "" : " (not durable)"}`;
      const total = Object.values(counts.counts).reduce((a, b) => a + b, 0);
      tabs.replaceChildren(
        el("button", { type: "button", class: f.state ? "" : "active", "data-state": "", onclick: () => go(hashFor({ state: "" })) }, "all", el("span", { class: "count", text: String(total) })),
        ...JOB_STATES.map((st) => el("button", { type: "button", class: f.state === st ? "active" : "", "data-state": st, onclick: () => go(hashFor({ state: st })) },
          st, el("span", { class: "count", "data-count": st, text: String(counts.counts[st] || 0) }))));
      retryDead.disabled = !counts.counts.dead;
      const q = new URLSearchParams({ limit: "20" });
      for (const k of ["state", "service", "action", "correlation_id"]) if (f[k]) q.set(k, f[k]);
      if (cursor) q.set("cursor", cursor);
      const page = await api("/api/jobs?" + q);
      next = page.next_cursor;
      // From an event: one job under its correlation id opens at once.
      // In the list's place in the history: Back from the job goes past the list.
      // Only while this list is shown: an answer that came after the operator moved on
      // took them away from the page they went to.
      if (S.view !== view) return;
      if (f.correlation_id && page.jobs.length === 1 && !cursor) { location.replace("#/jobs/" + enc(page.jobs[0].id)); return; }
      tbody.replaceChildren(...page.jobs.map(jobRow));
      if (!page.jobs.length) tbody.append(el("tr", {}, el("td", { colspan: "7", class: "desc", text: "no jobs" + (f.state ? " " + f.state : "") + (f.correlation_id ? " under this correlation id" + (f.found ? ", and no job has it as its id" : "") : "") })));
      older.disabled = !next; newer.disabled = !cursors.length;
      info.textContent = `page ${cursors.length + 1}`;
      notice([
        page.stale || counts.stale ? "the cluster's jobs may be out of date or incomplete: its broker is unreachable, or this instance is still reading them" : "",
        page.partial ? "only part of the cluster's jobs are listed and counted: this instance holds the most recently written (failures and unfinished jobs first, up to koan.nats.view_max_records); any job opens by its id" : "",
      ].filter(Boolean).join(" · "));
    } catch (e) { notice("jobs: " + e.message); }
  }
  const view = { refresh };
  return view;
}

function jobRow(j) {
  return el("tr", { "data-job": j.id, "data-state": j.state },
    el("td", { class: "first mono" }, el("a", { href: "#/jobs/" + enc(j.id), title: j.id, text: short(j.id) })),
    el("td", { "data-label": "service", text: `${j.service} · ${j.action}${j.then && j.then.length ? " +" + j.then.length : ""}` }),
    el("td", { "data-label": "state" }, el("span", { class: "job-state " + j.state, text: j.state })),
    el("td", { "data-label": "attempts", class: "num", text: `${j.attempts}/${j.max_attempts}` }),
    el("td", { "data-label": "created", text: ago(j.created_at) }),
    el("td", { "data-label": j.finished_at ? "finished" : "run at", text: ago(j.finished_at || j.run_at) }),
    el("td", { class: "actions-cell" }, jobButtons(j, () => S.view.refresh && S.view.refresh())));
}

// The operator's buttons for a job in its state; `after` runs once one did its work.
function jobButtons(j, after, onDelete) {
  const box = el("div", { class: "actions" });
  const act = (label, name, run, ask) => box.append(el("button", { type: "button", "data-job-action": name, onclick: async () => {
    if (ask && !confirm(ask)) return;
    try { const r = await run(); outcome(`${name} ${short(j.id)}: ${r && r.state ? "now " + r.state : "done"}`, true); }
    catch (e) { outcome(`${name} ${short(j.id)}: ${e.message}`, false); }
    after();
  } }, label));
  const again = j.state === "succeeded" ? ` It succeeded: its work will be done a second time.` : "";
  if (["dead", "cancelled", "retrying", "succeeded"].includes(j.state)) act("Retry", "retry", () => post(`/api/jobs/${enc(j.id)}/retry`), `Run job ${j.id} again?${again}`);
  if (!["succeeded", "dead", "cancelled"].includes(j.state)) act("Cancel", "cancel", () => post(`/api/jobs/${enc(j.id)}/cancel`), `Cancel job ${j.id}?`);
  if (["succeeded", "dead", "cancelled"].includes(j.state)) act("Delete", "delete", async () => { await api(`/api/jobs/${enc(j.id)}`, { method: "DELETE" }); if (onDelete) onDelete(); }, `Delete job ${j.id}? Its record is forgotten.`);
  return box;
}

function jobPage(main, [id]) {
  main.className = "single";
  const head = el("section", { id: "job-page", "data-job": id }, el("h2", {}, "Job ", el("code", { text: id })));
  const body = el("div");
  const attempts = el("tbody");
  const events = el("ul", { id: "job-events", class: "feed" });
  head.append(body);
  main.append(head,
    el("section", {}, el("h2", { text: "Attempts" }), el("div", { class: "scroll" }, el("table", { class: "runs", id: "attempts" },
      el("thead", {}, el("tr", {}, ...["#", "Started", "Finished", "Took", "Host", "Error"].map((t) => el("th", { text: t })))), attempts))),
    el("section", {}, el("h2", { text: "Events under its correlation id" }), events));
  let gone = false;
  async function refresh() {
    if (gone) return;
    let j;
    try { j = await api("/api/jobs/" + enc(id)); }
    catch (e) { body.replaceChildren(el("div", { class: "result err", text: e.message })); return; }
    const facts = [["state", el("span", { class: "job-state " + j.state, "data-field": "state", text: j.state })],
      ["service", el("a", { href: "#/services/" + enc(j.service), text: j.service })], ["action", j.action + (j.then && j.then.length ? " then " + j.then.map((s) => s.action).join(", ") : "")],
      ["correlation id", el("code", { "data-field": "correlation", text: j.correlation_id })], ["idempotency key", j.idempotency_key || "—"],
      ["priority", String(j.priority)], ["attempts", `${j.attempts} of ${j.max_attempts}`], ["created", when(j.created_at)],
      ["run at", when(j.run_at)], ["finished", when(j.finished_at)], ["host", j.instance || (j.history.length ? j.history[j.history.length - 1].instance : "") || "—"]];
    body.replaceChildren(
      el("dl", { class: "facts" }, ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)])),
      jobButtons(j, refresh, () => { gone = true; go("#/jobs"); }),
      el("h2", { text: "Parameters" }), json(j.params),
      ...(j.then && j.then.length ? [el("h2", { text: "Then" }), json(j.then)] : []),
      ...(j.result !== null && j.result !== undefined ? [el("h2", { text: "Result" + (j.result_truncated ? " (cut)" : "") }), el("div", { id: "job-result" }, json(j.result))] : []),
      ...(j.error ? [el("h2", { text: "Error" }), el("div", { id: "job-error", class: "result err" }, `${j.error.error}: ${j.error.message}`)] : []));
    attempts.replaceChildren(...j.history.slice().reverse().map((a) => el("tr", { "data-attempt": a.attempt },
      el("td", { "data-label": "#", text: String(a.attempt) }), el("td", { "data-label": "started", text: when(a.started_at) }),
      el("td", { "data-label": "finished", text: when(a.finished_at) }),
      el("td", { "data-label": "took", text: a.finished_at ? dur(Date.parse(a.finished_at) - Date.parse(a.started_at)) : "—" }),
      el("td", { "data-label": "host", text: a.instance }),
      el("td", { "data-label": "error", class: a.error ? "state-failed" : "", text: a.error ? `${a.error.error}: ${a.error.message}` : "—" }))));
    try {
      const evs = await api("/api/events/recent?correlation_id=" + enc(j.correlation_id));
      events.replaceChildren(...(evs.length ? evs.map(eventItem) : [el("li", { class: "desc", text: "none among the host's last events" })]));
    } catch (e) { events.replaceChildren(el("li", { class: "result err", text: e.message })); }
  }
  return { refresh };
}

route(/^\/jobs$/, "jobs", jobsPage);
route(/^\/jobs\/([^/]+)$/, "jobs", jobPage);
