"use strict";
// The cluster: each instance with its services, heartbeat age and load; stale ones
// marked.

function clusterPage(main) {
  main.className = "single";
  const tbody = el("tbody");
  const note = el("div", { class: "desc" });
  main.append(el("section", {}, el("h2", { text: "Instances" }), note,
    el("div", { class: "scroll" }, el("table", { class: "instances", id: "instances" },
      el("thead", {}, el("tr", {}, ...["Instance", "Heartbeat", "Load", "Services"].map((t) => el("th", { text: t })))), tbody))));
  async function refresh() {
    try {
      const r = await api("/api/instances");
      const ages = r.stale_after_ms == null ? "this host alone: no cluster transport" : `stale after ${r.stale_after_ms / 1000} s without a heartbeat, gone after ${r.gone_after_ms / 1000} s`;
      note.textContent = ages + (r.registry_error ? ` · registry: ${r.registry_error}` : "");
      tbody.replaceChildren(...r.instances.map((i) => el("tr", { "data-instance": i.name, "data-stale": i.stale ? "1" : "0" },
        el("td", { class: "first" }, el("span", { class: "name", text: i.name }), i.local ? el("span", { class: "desc", text: " (this host)" }) : null,
          i.stale ? el("span", { class: "stale", text: " stale" }) : null),
        el("td", { "data-label": "heartbeat", text: i.local ? "now" : dur(i.heartbeat_age_ms) + " ago" }),
        el("td", { "data-label": "load", text: `${i.load.in_flight} running · ${i.load.queue_depth} queued` }),
        el("td", { "data-label": "services", text: i.services.map((s) => `${s.name} (${s.state})`).join(", ") || "—" }))));
      notice("");
    } catch (e) { notice("instances: " + e.message); }
  }
  return { refresh };
}

route(/^\/cluster$/, "cluster", clusterPage);
