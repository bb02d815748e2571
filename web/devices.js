// The devices table: search, label and status filters, sorting, paging,
// and online/offline dots kept live by server-sent events.

import { api, canEdit, empty, followEvents, h, loading, mount, problemView, toast, when } from "./lib.js";

export async function pageDevices(t) {
  const q = new URLSearchParams(location.hash.split("?")[1] || "");
  const search = h("input", { type: "search", name: "q", value: q.get("q") || "", placeholder: "device id contains…", "aria-label": "Search devices" });
  const label = h("input", { name: "label", value: q.get("label") || "", placeholder: "key=value", "aria-label": "Label filter" });
  const status = h("select", { name: "status", "aria-label": "Status filter" },
    ["", "online", "offline"].map((s) => h("option", { value: s, selected: (q.get("status") || "") === s }, s || "any status")));
  const body = h("div", {}, loading("devices"));
  const err = h("div");
  const pager = h("div", { class: "toolbar" });
  const sort = { key: "id", dir: 1 };
  let page = [];
  const cursors = [null];
  const filters = h("form", {
    class: "toolbar", role: "search",
    onsubmit: (ev) => { ev.preventDefault(); cursors.length = 1; load(null); },
  }, search, label, status, h("button", { type: "submit" }, "Filter"));
  const createForm = canEdit() ? deviceCreateForm(t, err, () => load(cursors[cursors.length - 1])) : null;
  mount(h("h1", {}, "Devices"), filters, createForm, err, body, pager);

  async function load(cursor) {
    err.replaceChildren();
    const params = new URLSearchParams({ limit: "100" });
    if (cursor) params.set("cursor", cursor);
    if (label.value.trim()) params.set("label", label.value.trim());
    if (status.value) params.set("status", status.value);
    try {
      const { data } = await api("GET", `/v1/tenants/${t}/devices?${params}`);
      page = data.items;
      paint();
      pager.replaceChildren(
        h("button", { type: "button", disabled: cursors.length <= 1, onclick: () => { cursors.pop(); load(cursors[cursors.length - 1]); } }, "Previous"),
        h("button", { type: "button", disabled: !data.next_cursor, onclick: () => { cursors.push(data.next_cursor); load(data.next_cursor); } }, "Next"));
    } catch (e) { body.replaceChildren(problemView(e)); }
  }
  function paint() {
    const needle = search.value.trim().toLowerCase();
    const rows = page.filter((d) => !needle || d.id.toLowerCase().includes(needle))
      .sort((a, b) => String(a[sort.key] ?? "").localeCompare(String(b[sort.key] ?? "")) * sort.dir);
    const th = (key, text, cls) => h("th", { class: cls, "aria-sort": sort.key === key ? (sort.dir > 0 ? "ascending" : "descending") : "none" },
      h("button", { type: "button", onclick: () => { sort.dir = sort.key === key ? -sort.dir : 1; sort.key = key; paint(); } }, text));
    body.replaceChildren(rows.length === 0
      ? empty(page.length === 0 ? "No devices match." : "No device on this page matches the search.")
      : h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, th("status", "Status"), th("id", "Device"), th("labels", "Labels", "hide-narrow"), th("enabled", "Enabled"), th("updated_at", "Updated", "hide-narrow"))),
        h("tbody", {}, rows.map((d) => h("tr", { "data-device": d.id },
          h("td", {}, h("span", { class: `dot ${d.status || "offline"}`, "aria-hidden": "true" }), h("span", { class: "status" }, d.status || "offline")),
          h("td", {}, h("a", { href: `#/t/${t}/devices/${encodeURIComponent(d.id)}` }, d.id)),
          h("td", { class: "hide-narrow" }, Object.entries(d.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ")),
          h("td", {}, d.enabled ? "yes" : "no"),
          h("td", { class: "hide-narrow" }, when(d.updated_at))))))));
  }
  search.addEventListener("input", paint);
  load(null);
  followEvents(t, "?type=device.connected,device.disconnected", (ev) => {
    const id = ev.data?.device_id;
    const d = page.find((x) => x.id === id);
    if (!d) return;
    d.status = ev.type === "device.connected" ? "online" : "offline";
    paint();
  }, () => {});
}

function deviceCreateForm(t, err, done) {
  const id = h("input", { name: "id", required: true, pattern: "[A-Za-z0-9._\\-]{1,128}", placeholder: "sensor-001" });
  const labels = h("input", { name: "labels", placeholder: "site=berlin,kind=meter" });
  return h("form", {
    class: "inline",
    onsubmit: async (ev) => {
      ev.preventDefault();
      err.replaceChildren();
      const parsed = Object.fromEntries(labels.value.split(",").map((p) => p.trim()).filter(Boolean).map((p) => {
        const i = p.indexOf("=");
        return i < 0 ? [p, ""] : [p.slice(0, i), p.slice(i + 1)];
      }));
      try {
        await api("POST", `/v1/tenants/${t}/devices`, { id: id.value, labels: parsed });
        toast(`Device ${id.value} created`);
        id.value = ""; labels.value = "";
        done();
      } catch (e) { err.replaceChildren(problemView(e)); }
    },
  }, h("label", {}, "New device id", id), h("label", {}, "Labels", labels), h("button", { class: "primary" }, "Create device"));
}
