// The tenant overview: device counts, live charts of connections and
// messages per second over the last hour (the server's ten-second series),
// messages the broker dropped for the tenant's subscribers, top talkers and
// recent lifecycle events.

import { lineChart } from "./chart.js";
import { DROP_REASONS, api, empty, every, followEvents, h, listAll, liveLabel, loading, mount, problemView, table, time } from "./lib.js";

function card(n, label, cls) {
  return h("div", { class: `card ${cls || ""}` }, h("div", { class: "n" }, n), h("div", { class: "l" }, label));
}

function lifecycleRow(t, e) {
  return h("tr", {},
    h("td", {}, time(e.at)),
    h("td", {}, h("code", {}, e.type)),
    h("td", {}, h("a", { href: `#/t/${t}/devices/${encodeURIComponent(e.device_id)}` }, e.device_id)),
    h("td", { class: "hide-narrow" }, e.reason || e.remote_addr || ""));
}

export async function pageOverview(t) {
  const cards = h("div", { class: "cards", "aria-live": "polite" }, loading("devices"));
  const charts = h("div", { class: "grid2 charts" }, loading("charts"));
  const drops = h("div", { class: "cards", id: "drops", "aria-live": "polite" }, loading("dropped messages"));
  const talkers = h("div", {}, loading("top talkers"));
  const events = h("div", {}, loading("events"));
  const status = h("span", { class: "live-state" }, "connecting…");
  mount(h("h1", {}, `Tenant ${t}`),
    h("section", { "aria-labelledby": "fleet-h" }, h("h2", { id: "fleet-h", class: "sr-only" }, "Fleet"), cards),
    h("section", { "aria-labelledby": "charts-h" }, h("h2", { id: "charts-h" }, "Last hour ", status), charts),
    h("section", { "aria-labelledby": "drops-h" },
      h("h2", { id: "drops-h" }, "Dropped messages ", h("span", { class: "muted small" }, "for the tenant's subscribers, on this node since it started")), drops),
    h("div", { class: "grid2" },
      h("section", { "aria-labelledby": "talkers-h" }, h("h2", { id: "talkers-h" }, "Top talkers"), talkers),
      h("section", { "aria-labelledby": "events-h" }, h("h2", { id: "events-h" }, "Recent lifecycle events"), events)));

  const counts = { total: 0, online: 0 };
  const paintCards = () => cards.replaceChildren(
    card(counts.total, "devices", "total"), card(counts.online, "online", "online"),
    card(Math.max(0, counts.total - counts.online), "offline", "offline"));
  const recent = [];
  const paintEvents = () => events.replaceChildren(recent.length === 0
    ? empty("No lifecycle events since the server started.")
    : table(["When", "Event", "Device", h("th", { scope: "col", class: "hide-narrow" }, "Detail")],
      recent.slice(0, 25).map((e) => lifecycleRow(t, e)), { class: "lifecycle" }));

  async function loadSeries() {
    try {
      const { data } = await api("GET", `/v1/tenants/${t}/metrics/series`);
      const secs = data.bucket_seconds;
      const pts = (f) => data.buckets.map((b) => ({ t: new Date(b.start), v: f(b) }));
      charts.replaceChildren(
        lineChart({ id: "chart-connections", title: "Connections", unit: "open", points: pts((b) => b.connections), now: data.connections }),
        lineChart({ id: "chart-messages", title: "Messages", unit: "per second", points: pts((b) => b.messages / secs) }));
      talkers.replaceChildren(data.top_talkers.length === 0
        ? empty("No device has published in the last hour.")
        : table(["Device", h("th", { scope: "col", class: "num" }, "Messages (1 h)")], data.top_talkers.map((x) => h("tr", {},
          h("td", {}, h("a", { href: `#/t/${t}/devices/${encodeURIComponent(x.device_id)}` }, x.device_id)),
          h("td", { class: "num" }, x.messages))), { class: "talkers" }));
      paintDrops(data.drops);
    } catch (e) { charts.replaceChildren(problemView(e)); }
  }

  // Per reason the broker counts for a tenant; null without a broker.
  function paintDrops(d) {
    drops.replaceChildren(...(d === null || d === undefined
      ? [empty("Not counted: this server runs no MQTT broker.")]
      : ["slow_consumer", "tenant_queue_full"].map((k) => {
        const c = card(d[k], DROP_REASONS[k], `drop ${k.replaceAll("_", "-")}${d[k] > 0 ? " dropped" : ""}`);
        c.dataset.drops = d[k];
        return c;
      })));
  }

  // Presence is written to the store in the background: a device that went
  // a moment before this page loaded may still be listed online, and the
  // stream will not repeat it. So the counts are taken again now and then.
  async function loadCounts() {
    const devices = await listAll(`/v1/tenants/${t}/devices`);
    counts.total = devices.length;
    counts.online = devices.filter((d) => d.status === "online").length;
    paintCards();
  }
  try {
    const [, lifecycle] = await Promise.all([loadCounts(), api("GET", `/v1/tenants/${t}/lifecycle`)]);
    recent.push(...lifecycle.data.items);
    paintEvents();
  } catch (e) { cards.replaceChildren(problemView(e)); events.replaceChildren(); }
  loadSeries();
  let ticks = 0;
  every(10000, () => {
    loadSeries();
    ticks += 1;
    if (ticks % 3 === 0) loadCounts().catch(() => { /* the next tick retries */ });
  });
  followEvents(t, "?type=device.*", (ev) => {
    if (ev.type === "device.connected") counts.online += 1;
    if (ev.type === "device.disconnected") counts.online = Math.max(0, counts.online - 1);
    if (ev.type === "device.created") counts.total += 1;
    if (ev.type === "device.deleted") counts.total = Math.max(0, counts.total - 1);
    paintCards();
    recent.unshift({ at: ev.timestamp, type: ev.type, device_id: ev.device || ev.data?.device_id || "", reason: ev.data?.reason, remote_addr: ev.data?.remote_addr });
    recent.length = Math.min(recent.length, 100);
    paintEvents();
  }, liveLabel(status));
}
