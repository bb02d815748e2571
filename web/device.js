// One device: status (live), state with the desired editor (If-Match, 412
// handling), presence history, the last messages arriving live,
// certificates, the MQTT password and the device's persistent MQTT session.

import { api, canEdit, dropsText, empty, every, followEvents, h, liveLabel, loading, mount, problemView, table, time, toast, when } from "./lib.js";

const pretty = (v) => JSON.stringify(v ?? null, null, 2);

export async function pageDevice(t, d) {
  const base = `/v1/tenants/${t}/devices/${encodeURIComponent(d)}`;
  const err = h("div");
  const head = h("div", {}, loading("device"));
  const section = (id, title) => h("section", { "aria-labelledby": id, class: "panel" }, h("h2", { id }, title));
  const stateBox = section("state-h", "State");
  const certBox = section("cert-h", "Certificates");
  const sessionBox = section("session-h", "Persistent session");
  const presenceBox = h("div", {}, loading("presence history"));
  const messagesBox = h("div", {}, loading("messages"));
  const liveState = h("span", { class: "live-state" }, "connecting…");
  mount(h("h1", {}, h("a", { href: `#/t/${t}/devices` }, "Devices"), " / ", h("span", { class: "device-id" }, d)),
    err, head,
    h("div", { class: "grid2" }, stateBox, certBox),
    sessionBox,
    h("div", { class: "grid2" },
      h("section", { "aria-labelledby": "presence-h", class: "panel" }, h("h2", { id: "presence-h" }, "Presence history"), presenceBox),
      h("section", { "aria-labelledby": "messages-h", class: "panel" }, h("h2", { id: "messages-h" }, "Last messages ", liveState), messagesBox)));
  let device;
  let etag = null;
  try {
    const res = await api("GET", base);
    device = res.data;
    etag = res.etag;
  } catch (e) { head.replaceChildren(problemView(e)); return; }
  paintHead();
  loadState();
  loadCerts();
  loadPresence();
  loadMessages();
  loadSession();
  // Only reported state is a platform event; other device topics are seen
  // in the recent-messages ring, read every few seconds while the page is
  // open (and at once on each event).
  every(3000, loadMessages);
  // A disconnect is written to the session store just after its event.
  every(3000, loadSession);
  followEvents(t, `?device=${encodeURIComponent(d)}`, (ev) => {
    if (ev.type === "device.connected" || ev.type === "device.disconnected") {
      device.status = ev.type === "device.connected" ? "online" : "offline";
      paintHead();
      loadPresence();
      loadSession();
    }
    if (ev.type === "state.reported") { settle(); loadMessages(); }
    if (ev.type === "state.desired") settle();
  }, liveLabel(liveState));

  function paintHead() {
    const status = device.status || "offline";
    const actions = canEdit() ? h("div", { class: "toolbar" },
      h("button", { type: "button", onclick: toggle }, device.enabled ? "Disable" : "Enable"),
      h("button", { type: "button", onclick: resetPassword }, "New MQTT password"),
      h("button", { type: "button", class: "danger", onclick: remove }, "Delete")) : null;
    head.replaceChildren(h("dl", { class: "facts" },
      h("div", {}, h("dt", {}, "Status"), h("dd", { id: "device-status", "data-status": status, "aria-live": "polite" },
        h("span", { class: `dot ${status}`, "aria-hidden": "true" }), status)),
      h("div", {}, h("dt", {}, "Enabled"), h("dd", {}, device.enabled ? "yes" : "no")),
      h("div", {}, h("dt", {}, "Labels"), h("dd", {}, h("code", {}, JSON.stringify(device.labels || {})))),
      h("div", {}, h("dt", {}, "Created"), h("dd", {}, when(device.created_at)))), actions);
  }
  async function toggle() {
    err.replaceChildren();
    try {
      const res = await api("PATCH", base, { enabled: !device.enabled }, { contentType: "application/merge-patch+json", headers: etag ? { "If-Match": etag } : {} });
      device = { ...res.data, status: device.status }; etag = res.etag; paintHead();
    } catch (e) { err.replaceChildren(problemView(e)); }
  }
  async function remove() {
    if (!confirm(`Delete device ${d}? Its certificates stop working at once.`)) return;
    try { await api("DELETE", base); location.hash = `#/t/${t}/devices`; } catch (e) { err.replaceChildren(problemView(e)); }
  }
  async function resetPassword() {
    err.replaceChildren();
    try {
      const { data } = await api("POST", `${base}/password`, {});
      head.append(h("div", { class: "secret", role: "alert" }, "MQTT user name ", h("code", {}, `${d}@${t}`), ", password (shown once): ", h("code", {}, data.password)));
    } catch (e) { err.replaceChildren(problemView(e)); }
  }

  // The reported half and the delta update live; the desired editor is
  // left alone so that what the user is typing survives.
  const reportedPre = h("pre", { class: "reported", tabindex: "0", "aria-label": "Reported state" });
  const deltaPre = h("pre", { class: "delta", tabindex: "0", "aria-label": "Delta" });
  const retainedBox = h("div");
  function paintLive(data) {
    reportedPre.textContent = pretty(data.reported);
    deltaPre.textContent = pretty(data.delta ?? {});
    retainedBox.replaceChildren((data.retained || []).length === 0 ? empty("No retained topics.")
      : h("ul", {}, data.retained.map((r) => h("li", {}, h("code", {}, r.topic), ` (QoS ${r.qos}, ${when(r.updated_at)})`))));
  }
  // The broker's event can arrive before the state writer has stored the
  // report (they run side by side), so read it again a little later too.
  function settle() {
    refreshReported();
    for (const ms of [750, 2500]) setTimeout(refreshReported, ms);
  }
  async function refreshReported() {
    try { paintLive((await api("GET", `${base}/state`)).data); } catch { /* the next event retries */ }
  }
  async function loadState() {
    stateBox.replaceChildren(h("h2", { id: "state-h" }, "State"), loading("state"));
    let data;
    let version;
    try {
      ({ data, etag: version } = await api("GET", `${base}/state`));
    } catch (e) {
      stateBox.replaceChildren(h("h2", { id: "state-h" }, "State"), e.status === 404 ? empty("No state yet.") : problemView(e));
      return;
    }
    paintLive(data);
    const desired = h("textarea", { id: "desired-json", class: "json", spellcheck: "false" }, pretty(data.desired ?? {}));
    const out = h("div", { "aria-live": "polite" });
    const editor = canEdit() ? h("form", {
      class: "desired-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        out.replaceChildren();
        let body;
        try { body = JSON.parse(desired.value); } catch (e) { out.replaceChildren(h("div", { class: "error", role: "alert" }, `Not JSON: ${e.message}`)); return; }
        try {
          await api("PUT", `${base}/state/desired`, body, { headers: version ? { "If-Match": version } : {} });
          toast("Desired state saved and sent to the device");
          loadState();
        } catch (e) {
          out.replaceChildren(problemView(e), e.status === 412
            ? h("p", {}, "Someone changed the desired state since you loaded it. ",
              h("button", { type: "button", onclick: loadState }, "Load the latest version")) : null);
        }
      },
    }, h("label", { for: "desired-json" }, "Desired (a JSON merge patch: null removes a key)"), desired,
    h("div", { class: "toolbar" }, h("button", { class: "primary", type: "submit" }, "Save desired"),
      h("span", { class: "muted" }, `version ${data.versions?.desired ?? 0}`)), out)
      : h("pre", { class: "desired" }, pretty(data.desired ?? {}));
    stateBox.replaceChildren(h("h2", { id: "state-h" }, "State"),
      h("h3", {}, "Reported"), reportedPre, h("h3", {}, "Delta"), deltaPre,
      h("h3", {}, "Desired"), editor, h("h3", {}, "Retained topics"), retainedBox);
  }

  async function loadPresence() {
    try {
      const { data } = await api("GET", `${base}/presence`);
      presenceBox.replaceChildren(data.items.length === 0 ? empty("No connects or disconnects since the server started.")
        : table(["When", "Event", "Reason / address"], data.items.map((e) => h("tr", {},
          h("td", {}, time(e.at)),
          h("td", {}, h("span", { class: `dot ${e.type === "device.connected" ? "online" : "offline"}`, "aria-hidden": "true" }),
            e.type === "device.connected" ? "connected" : "disconnected"),
          h("td", {}, e.reason ? `${e.reason}${e.graceful === false ? " (not graceful)" : ""}` : e.remote_addr || ""))), { class: "presence" }));
    } catch (e) { presenceBox.replaceChildren(problemView(e)); }
  }
  async function loadMessages() {
    try {
      const { data } = await api("GET", `${base}/messages?limit=20`);
      messagesBox.replaceChildren(data.items.length === 0 ? empty("No messages since the server started.")
        : h("ol", { class: "messages" }, data.items.map((m) => h("li", {},
          h("div", {}, h("code", {}, m.topic), " ", h("span", { class: "muted" }, time(m.received_at), ` · QoS ${m.qos}${m.retain ? " · retained" : ""}`)),
          h("pre", {}, m.encoding === "base64" ? `(base64) ${m.payload}` : m.payload)))));
    } catch (e) { messagesBox.replaceChildren(e.status === 503 ? empty("MQTT is not available on this server.") : problemView(e)); }
  }

  // The session its client id (the device id) keeps across disconnects and
  // restarts: stored only for clean session 0 / session expiry above 0.
  async function loadSession() {
    const path = `/v1/tenants/${t}/sessions/${encodeURIComponent(d)}`;
    const title = h("h2", { id: "session-h" }, "Persistent session");
    let s;
    try {
      ({ data: s } = await api("GET", path));
    } catch (e) {
      sessionBox.replaceChildren(title, e.status === 404 ? h("div", { id: "session", "data-session": "none" }, empty("No persistent session.")) : problemView(e));
      return;
    }
    const out = h("div", { "aria-live": "polite" });
    const end = async () => {
      out.replaceChildren();
      try {
        await api("DELETE", path);
        toast(`Session ${d} ended with its queue`);
        loadSession();
      } catch (e) { out.replaceChildren(problemView(e)); }
    };
    const row = (k, v) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, v));
    // Counted by the node holding the session in memory: null from any
    // other node (or without a broker).
    const drops = s.drops ? dropsText(s.drops) : null;
    const dropsCell = drops
      ? h("span", { class: `session-drops${drops.total > 0 ? " bad" : ""}`, "data-drops": drops.total }, drops.text)
      : h("span", { class: "session-drops muted", "data-drops": "unknown" }, "not counted on this node (see the node serving it)");
    sessionBox.replaceChildren(title,
      h("table", { id: "session", "data-session": s.connected ? "connected" : "offline" }, h("tbody", {},
        row("Connected", s.connected ? `yes${s.node ? ` (node ${s.node})` : ""}` : "no"),
        row("Protocol", `MQTT ${s.protocol}`),
        row("Subscriptions", String(s.subscriptions)),
        row("Queued messages", h("span", { class: "session-queued" }, String(s.queued))),
        row("In flight", String(s.in_flight)),
        row("Dropped messages", dropsCell),
        row("Expires", s.connected ? "when it disconnects and stays away" : s.expires_at ? when(s.expires_at) : "never"))),
      canEdit() ? h("div", { class: "toolbar" }, h("button", { type: "button", class: "danger", onclick: end }, "End session")) : null,
      out);
  }

  async function loadCerts() {
    const list = h("div", {}, loading("certificates"));
    const out = h("div", { "aria-live": "polite" });
    const csr = h("textarea", { id: "csr-pem", class: "json", rows: 4, placeholder: "-----BEGIN CERTIFICATE REQUEST-----" });
    const refresh = async () => {
      try {
        const { data } = await api("GET", `${base}/certificates`);
        const items = data.items || data;
        list.replaceChildren(items.length === 0 ? empty("No certificates.")
          : table(["Serial", "Status", h("th", { scope: "col", class: "hide-narrow" }, "Expires"), canEdit() ? h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")) : null].filter(Boolean),
            items.map((c) => h("tr", { "data-serial": c.serial },
              h("td", {}, h("code", {}, c.serial)), h("td", { class: "cert-status" }, c.status), h("td", { class: "hide-narrow" }, when(c.not_after)),
              canEdit() ? h("td", {}, c.status === "active" ? h("button", { type: "button", class: "danger", onclick: () => revoke(c.serial) }, "Revoke") : "") : null))));
      } catch (e) { list.replaceChildren(problemView(e)); }
    };
    const revoke = async (serial) => {
      out.replaceChildren();
      try {
        await api("POST", `${base}/certificates/${serial}/revoke`, { reason: "key_compromise" });
        toast(`Certificate ${serial} revoked; its sessions are closed`);
        refresh();
      } catch (e) { out.replaceChildren(problemView(e)); }
    };
    const issue = async (body) => {
      out.replaceChildren();
      try {
        const { data: cert } = await api("POST", `${base}/certificates`, body);
        const bundle = [cert.private_key_pem, cert.certificate_pem, cert.chain_pem].filter(Boolean).join("\n");
        const url = URL.createObjectURL(new Blob([bundle], { type: "application/x-pem-file" }));
        // The key is downloadable once: the link goes with the first click.
        const link = h("a", { href: url, download: `${d}.pem`, class: "download" }, "Download key and chain (PEM)");
        link.addEventListener("click", () => setTimeout(() => {
          URL.revokeObjectURL(url);
          link.replaceWith(h("span", {}, "Downloaded."));
        }, 1000));
        out.replaceChildren(h("div", { class: "secret", role: "alert" },
          `Certificate ${cert.serial} issued. `, cert.private_key_pem ? "The private key is not kept by the server: " : "", link));
        refresh();
      } catch (e) { out.replaceChildren(problemView(e)); }
    };
    certBox.replaceChildren(h("h2", { id: "cert-h" }, "Certificates"), list,
      canEdit() ? h("div", {},
        h("div", { class: "toolbar" }, h("button", { type: "button", class: "primary", onclick: () => issue({}) }, "Issue with a server-made key")),
        h("form", { onsubmit: (ev) => { ev.preventDefault(); issue({ csr_pem: csr.value }); } },
          h("label", { for: "csr-pem" }, "…or sign a CSR (PEM)"), csr, h("button", { type: "submit" }, "Issue from CSR"))) : null,
      out);
    refresh();
  }
}
