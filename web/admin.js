// Tenants (platform admin), the audit log, and webhooks: endpoints, their
// delivery log with status and response, redeliver and a test ping.

import { api, empty, every, h, isAdmin, listAll, loading, mount, problemView, table, toast, when } from "./lib.js";

export async function pageTenants() {
  const list = h("div", {}, loading("tenants"));
  const err = h("div", { "aria-live": "polite" });
  const id = h("input", { id: "tenant-id", name: "id", required: true, pattern: "[a-z0-9\\-]{3,63}", placeholder: "acme" });
  const name = h("input", { id: "tenant-name", name: "name", required: true, placeholder: "Acme Corp" });
  const create = h("form", {
    class: "inline",
    onsubmit: async (ev) => {
      ev.preventDefault();
      err.replaceChildren();
      try {
        await api("POST", "/v1/tenants", { id: id.value, name: name.value });
        toast(`Tenant ${id.value} created`);
        id.value = ""; name.value = "";
        load();
      } catch (e) { err.replaceChildren(problemView(e)); }
    },
  }, h("label", { for: "tenant-id" }, "Id", id), h("label", { for: "tenant-name" }, "Name", name), h("button", { class: "primary" }, "Create tenant"));
  mount(h("h1", {}, "Tenants"), create, err, list);
  async function load() {
    try {
      const items = await listAll("/v1/tenants");
      list.replaceChildren(items.length === 0 ? empty("No tenants yet. Create the first one above.")
        : table(["Id", "Name", h("th", { scope: "col", class: "hide-narrow" }, "Created")], items.map((t) => h("tr", {},
          h("td", {}, h("a", { href: `#/t/${t.id}` }, t.id)), h("td", {}, t.name),
          h("td", { class: "hide-narrow" }, when(t.created_at))))));
    } catch (e) { list.replaceChildren(problemView(e)); }
  }
  load();
}

export async function pageAudit(t) {
  const body = h("div", {}, loading("audit log"));
  mount(h("h1", {}, "Audit log"), body);
  try {
    const { data } = await api("GET", `/v1/tenants/${t}/audit?limit=200`);
    body.replaceChildren(data.items.length === 0 ? empty("Nothing has changed yet.")
      : table(["When", "Actor", "Action", "Target", h("th", { scope: "col", class: "hide-narrow" }, "Request")],
        data.items.map((a) => h("tr", {},
          h("td", {}, when(a.at)), h("td", {}, a.actor), h("td", {}, h("code", {}, a.action)), h("td", {}, a.target),
          h("td", { class: "hide-narrow" }, h("code", {}, a.request_id || ""))))));
  } catch (e) { body.replaceChildren(problemView(e)); }
}

function deliveryRows(base, items, out, reload) {
  return items.map((x) => h("tr", { "data-delivery": x.id },
    h("td", {}, when(x.created_at)),
    h("td", {}, h("code", {}, x.event_type)),
    h("td", {}, h("span", { class: `badge ${x.status}` }, x.status), x.attempts > 1 ? ` (${x.attempts} attempts)` : ""),
    h("td", {}, x.last_status ?? "—", x.last_latency_ms != null ? h("span", { class: "muted" }, ` ${x.last_latency_ms} ms`) : ""),
    h("td", { class: "hide-narrow" }, x.last_error ? h("span", { class: "bad" }, x.last_error) : "",
      x.last_response ? h("details", {}, h("summary", {}, "Response"), h("pre", {}, x.last_response)) : ""),
    isAdmin() ? h("td", {}, h("button", {
      type: "button",
      onclick: async () => {
        out.replaceChildren();
        try { await api("POST", `${base}/deliveries/${x.id}/redeliver`, {}); toast(`Delivery ${x.id} queued again`); reload(); } catch (e) { out.replaceChildren(problemView(e)); }
      },
    }, "Redeliver")) : null));
}

function webhookPanel(t, w, refreshAll, stoppers) {
  const base = `/v1/tenants/${t}/webhooks/${w.id}`;
  const out = h("div", { "aria-live": "polite" });
  const log = h("div", {}, loading("deliveries"));
  const loadLog = async () => {
    try {
      const { data } = await api("GET", `${base}/deliveries?limit=50`);
      log.replaceChildren(data.items.length === 0 ? empty("No deliveries yet.")
        : table(["When", "Event", "Status", "HTTP", h("th", { scope: "col", class: "hide-narrow" }, "Error / response"),
          isAdmin() ? h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")) : null].filter(Boolean),
        deliveryRows(base, data.items, out, loadLog), { class: "deliveries" }));
    } catch (e) { log.replaceChildren(problemView(e)); }
  };
  const act = (label, fn, cls) => h("button", { type: "button", class: cls, onclick: async () => {
    out.replaceChildren();
    try { await fn(); } catch (e) { out.replaceChildren(problemView(e)); }
  } }, label);
  const actions = isAdmin() ? h("div", { class: "toolbar" },
    act("Send test ping", async () => { await api("POST", `${base}/test`, {}); toast("Test ping queued"); loadLog(); }),
    act(w.enabled ? "Disable" : "Enable", async () => {
      await api("PATCH", base, { enabled: !w.enabled }, { contentType: "application/merge-patch+json" });
      refreshAll();
    }),
    act("Refresh log", loadLog),
    act("Delete", async () => {
      if (!confirm(`Delete the endpoint ${w.url}?`)) return;
      await api("DELETE", base); refreshAll();
    }, "danger")) : h("div", { class: "toolbar" }, h("button", { type: "button", onclick: loadLog }, "Refresh log"));
  loadLog();
  stoppers.push(every(5000, loadLog));
  return h("article", { class: "panel webhook", "aria-label": `Webhook ${w.url}` },
    h("h2", {}, h("code", {}, w.url)),
    h("p", {}, h("span", { class: `badge ${w.enabled ? "delivered" : "failed"}` }, w.enabled ? "enabled" : "disabled"),
      " events ", h("code", {}, (w.events || []).join(", ")),
      w.topic_filter ? [" topics ", h("code", {}, w.topic_filter)] : "",
      w.disabled_reason ? h("span", { class: "bad" }, ` — ${w.disabled_reason}`) : "",
      w.consecutive_failures ? h("span", { class: "muted" }, ` · ${w.consecutive_failures} failures in a row`) : ""),
    actions, out, h("h3", {}, "Delivery log"), log);
}

function webhookCreateForm(t, err, done) {
  const url = h("input", { id: "wh-url", type: "url", required: true, placeholder: "https://example.com/hooks/fleetmq" });
  const events = h("input", { id: "wh-events", required: true, value: "device.*", placeholder: "device.*, state.reported" });
  return h("form", {
    class: "inline",
    onsubmit: async (ev) => {
      ev.preventDefault();
      err.replaceChildren();
      try {
        const { data } = await api("POST", `/v1/tenants/${t}/webhooks`, {
          url: url.value.trim(), events: events.value.split(",").map((s) => s.trim()).filter(Boolean),
        });
        err.replaceChildren(h("div", { class: "secret", role: "alert" }, "Signing secret (shown once): ", h("code", {}, data.secret)));
        url.value = "";
        done();
      } catch (e) { err.replaceChildren(problemView(e)); }
    },
  }, h("label", { for: "wh-url" }, "Endpoint URL", url), h("label", { for: "wh-events" }, "Events", events),
  h("button", { class: "primary" }, "Add endpoint"));
}

export async function pageWebhooks(t) {
  const body = h("div", {}, loading("webhooks"));
  const err = h("div", { "aria-live": "polite" });
  mount(h("h1", {}, "Webhooks"), isAdmin() ? webhookCreateForm(t, err, load) : null, err, body);
  // Each panel refreshes its delivery log; panels replaced on reload stop.
  const stoppers = [];
  async function load() {
    try {
      const items = await listAll(`/v1/tenants/${t}/webhooks`);
      stoppers.splice(0).forEach((stop) => stop());
      body.replaceChildren(...(items.length === 0 ? [empty("No webhook endpoints.")] : items.map((w) => webhookPanel(t, w, load, stoppers))));
    } catch (e) { body.replaceChildren(problemView(e)); }
  }
  load();
}
