// fleetmq dashboard: a small single-page app over the REST API (/v1).
// No framework and no build step, so `cargo run` serves it as it is.
// The bearer token lives only in this module's memory: a reload signs out,
// which is the price of never putting a credential in localStorage.

const session = { token: null, claims: null, expiresAt: 0 };
const live = { abort: null };

// ---------- DOM helpers (text nodes only: API data is never parsed as HTML)

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function mount(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes);
}

function toast(text) {
  const box = document.getElementById("toast");
  const item = h("div", {}, text);
  box.append(item);
  setTimeout(() => item.remove(), 5000);
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

// ---------- API

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(method, path, body, extra = {}) {
  const headers = { Accept: "application/json, application/problem+json", ...(extra.headers || {}) };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = extra.contentType || "application/json";
    payload = typeof body === "string" ? body : JSON.stringify(body);
  }
  const res = await fetch(path, { method, headers, body: payload });
  if (res.status === 401 && session.token) {
    signOut("Your session ended; sign in again.");
    throw new ApiError(401, { detail: "signed out" });
  }
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json().catch(() => ({})) : await res.text();
  if (!res.ok) throw new ApiError(res.status, typeof data === "object" ? data : { detail: data });
  return { data, etag: res.headers.get("etag") };
}

function problemView(err) {
  if (!(err instanceof ApiError)) return h("div", { class: "error", role: "alert" }, String(err));
  const p = err.problem || {};
  return h("div", { class: "error", role: "alert" },
    h("strong", {}, p.title || `Error ${err.status}`), ": ", p.detail || err.message,
    Array.isArray(p.errors) && p.errors.length
      ? h("ul", {}, p.errors.map((e) => h("li", {}, h("code", {}, e.pointer || ""), " ", e.detail)))
      : null);
}

// Pages through a list endpoint (`{items, next_cursor}`) up to `max` items.
async function listAll(path, max = 10000) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const url = `${path}${sep}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const { data } = await api("GET", url);
    items.push(...data.items);
    cursor = data.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

// ---------- session

function decodeClaims(token) {
  const part = token.split(".")[1];
  if (!part) throw new Error("that is not a JWT");
  const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
  return JSON.parse(json);
}

const role = () => session.claims?.role;
const canEdit = () => ["platform-admin", "tenant-admin", "operator"].includes(role());
const isAdmin = () => ["platform-admin", "tenant-admin"].includes(role());

function signIn(token, expiresIn) {
  const claims = decodeClaims(token);
  session.token = token;
  session.claims = claims;
  session.expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : claims.exp * 1000;
  renderChrome();
  location.hash = claims.tenant ? `#/t/${claims.tenant}` : "#/tenants";
  route();
}

function signOut(message) {
  session.token = null;
  session.claims = null;
  stopLive();
  renderChrome();
  location.hash = "#/";
  renderSignIn(message);
}

function renderSignIn(message) {
  const key = h("input", { id: "api-key", name: "api_key", type: "password", autocomplete: "off", required: true });
  const tokenInput = h("textarea", { id: "token", name: "token", rows: 3 });
  const out = h("div", { "aria-live": "polite" }, message ? h("div", { class: "error" }, message) : null);
  const form = h("form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      out.replaceChildren();
      try {
        if (tokenInput.value.trim()) return signIn(tokenInput.value.trim());
        const { data } = await api("POST", "/v1/auth/token", { api_key: key.value.trim() });
        signIn(data.access_token, data.expires_in);
      } catch (err) {
        out.replaceChildren(problemView(err));
      }
    },
  },
  h("label", { for: "api-key" }, "API key", key),
  h("label", { for: "token" }, "…or a bearer token (fleetmq admin token)", tokenInput),
  h("button", { class: "primary", type: "submit" }, "Sign in"),
  out);
  mount(h("section", { class: "signin", "aria-labelledby": "signin-h" },
    h("h1", { id: "signin-h" }, "Sign in to fleetmq"), form));
}

function renderChrome() {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  nav.replaceChildren();
  who.replaceChildren();
  if (!session.claims) return;
  const t = currentTenant();
  const links = [];
  if (role() === "platform-admin") links.push(["#/tenants", "Tenants"]);
  if (t) {
    links.push([`#/t/${t}`, "Overview"], [`#/t/${t}/devices`, "Devices"], [`#/t/${t}/webhooks`, "Webhooks"]);
    if (isAdmin()) links.push([`#/t/${t}/audit`, "Audit log"]);
  }
  for (const [href, text] of links) {
    nav.append(h("a", { href, "aria-current": location.hash === href ? "page" : null }, text));
  }
  who.append(h("span", {}, `${session.claims.sub} · ${role()}${session.claims.tenant ? ` · ${session.claims.tenant}` : ""}`),
    h("button", { type: "button", onclick: () => signOut() }, "Sign out"));
}

function currentTenant() {
  const m = location.hash.match(/^#\/t\/([a-z0-9-]+)/);
  return m ? m[1] : session.claims?.tenant || null;
}

// ---------- live events (SSE over fetch, so the bearer header can be sent)

function stopLive() {
  if (live.abort) live.abort.abort();
  live.abort = null;
}

async function followEvents(tenant, query, onEvent, onState) {
  stopLive();
  const ctrl = new AbortController();
  live.abort = ctrl;
  let backoff = 500;
  while (!ctrl.signal.aborted) {
    try {
      const res = await fetch(`/v1/tenants/${tenant}/events/stream${query}`, {
        headers: { Authorization: `Bearer ${session.token}`, Accept: "text/event-stream" },
        signal: ctrl.signal,
      });
      if (res.status === 404 || res.status === 405) { onState("unavailable"); return; }
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      onState("live");
      backoff = 500;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (data) {
            try { onEvent(JSON.parse(data)); } catch { /* a keep-alive or a non-JSON frame */ }
          }
        }
      }
    } catch (err) {
      if (ctrl.signal.aborted) return;
      onState("reconnecting");
    }
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 15000);
  }
}

// ---------- pages

async function pageTenants() {
  const list = h("div", {}, h("p", { class: "loading" }, "Loading tenants…"));
  const err = h("div");
  const id = h("input", { name: "id", required: true, pattern: "[a-z0-9-]{3,63}", placeholder: "acme" });
  const name = h("input", { name: "name", required: true, placeholder: "Acme Corp" });
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
  }, h("label", {}, "Id", id), h("label", {}, "Name", name), h("button", { class: "primary" }, "Create tenant"));
  mount(h("h1", {}, "Tenants"), create, err, list);
  async function load() {
    try {
      const items = await listAll("/v1/tenants");
      list.replaceChildren(items.length === 0
        ? h("p", { class: "empty" }, "No tenants yet. Create the first one above.")
        : h("div", { class: "table-wrap" }, h("table", {},
          h("thead", {}, h("tr", {}, h("th", {}, "Id"), h("th", {}, "Name"), h("th", { class: "hide-narrow" }, "Created"))),
          h("tbody", {}, items.map((t) => h("tr", {},
            h("td", {}, h("a", { href: `#/t/${t.id}` }, t.id)), h("td", {}, t.name),
            h("td", { class: "hide-narrow" }, when(t.created_at))))))));
    } catch (e) { list.replaceChildren(problemView(e)); }
  }
  load();
}

async function pageOverview(t) {
  const cards = h("div", { class: "cards" }, h("p", { class: "loading" }, "Loading…"));
  const events = h("ol", { class: "events", reversed: true });
  const status = h("span", { class: "muted" }, "");
  mount(h("h1", {}, `Tenant ${t}`), cards, h("h2", {}, "Recent events ", status), events);
  const counts = { total: 0, online: 0 };
  const paint = () => cards.replaceChildren(
    card(counts.total, "devices"), card(counts.online, "online"), card(counts.total - counts.online, "offline"));
  try {
    const devices = await listAll(`/v1/tenants/${t}/devices`);
    counts.total = devices.length;
    counts.online = devices.filter((d) => d.status === "online").length;
    paint();
  } catch (e) { cards.replaceChildren(problemView(e)); return; }
  followEvents(t, "", (ev) => {
    if (ev.type === "device.connected") counts.online += 1;
    if (ev.type === "device.disconnected") counts.online = Math.max(0, counts.online - 1);
    paint();
    events.prepend(h("li", {}, h("code", {}, ev.type), " ", ev.data?.device_id || "", " ", h("span", { class: "muted" }, when(ev.timestamp))));
    while (events.children.length > 50) events.lastChild.remove();
  }, (s) => { status.textContent = s === "live" ? "(live)" : s === "unavailable" ? "(live events not available on this server)" : "(reconnecting…)"; });
}

function card(n, label) {
  return h("div", { class: "card" }, h("div", { class: "n" }, n), h("div", { class: "l" }, label));
}

async function pageDevices(t) {
  const q = new URLSearchParams(location.hash.split("?")[1] || "");
  const search = h("input", { type: "search", name: "q", value: q.get("q") || "", placeholder: "device id contains…", "aria-label": "Search devices" });
  const label = h("input", { name: "label", value: q.get("label") || "", placeholder: "key=value", "aria-label": "Label filter" });
  const status = h("select", { name: "status", "aria-label": "Status filter" },
    ["", "online", "offline"].map((s) => h("option", { value: s, selected: (q.get("status") || "") === s }, s || "any status")));
  const body = h("div", {}, h("p", { class: "loading" }, "Loading devices…"));
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
      ? h("p", { class: "empty" }, page.length === 0 ? "No devices match." : "No device on this page matches the search.")
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
  const id = h("input", { name: "id", required: true, pattern: "[A-Za-z0-9._-]{1,128}", placeholder: "sensor-001" });
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

async function pageDevice(t, d) {
  const base = `/v1/tenants/${t}/devices/${encodeURIComponent(d)}`;
  const err = h("div");
  const head = h("div", {}, h("p", { class: "loading" }, "Loading device…"));
  const stateBox = h("section", { "aria-labelledby": "state-h" });
  const certBox = h("section", { "aria-labelledby": "cert-h" });
  mount(h("h1", {}, h("a", { href: `#/t/${t}/devices` }, "Devices"), " / ", d), err, head, h("div", { class: "grid2" }, stateBox, certBox));
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

  function paintHead() {
    const actions = canEdit() ? h("div", { class: "toolbar" },
      h("button", { type: "button", onclick: toggle }, device.enabled ? "Disable" : "Enable"),
      h("button", { type: "button", class: "danger", onclick: remove }, "Delete"),
      h("button", { type: "button", onclick: resetPassword }, "New MQTT password")) : null;
    head.replaceChildren(h("dl", {},
      h("dt", {}, "Status"), h("dd", {}, h("span", { class: `dot ${device.status || "offline"}` }), device.status || "offline"),
      h("dt", {}, "Enabled"), h("dd", {}, device.enabled ? "yes" : "no"),
      h("dt", {}, "Labels"), h("dd", {}, h("code", {}, JSON.stringify(device.labels || {}))),
      h("dt", {}, "Attributes"), h("dd", {}, h("code", {}, JSON.stringify(device.attributes || {}))),
      h("dt", {}, "Created"), h("dd", {}, when(device.created_at))), actions);
  }
  async function toggle() {
    err.replaceChildren();
    try {
      const res = await api("PATCH", base, { enabled: !device.enabled }, { contentType: "application/merge-patch+json", headers: etag ? { "If-Match": etag } : {} });
      device = res.data; etag = res.etag; paintHead();
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
  async function loadState() {
    stateBox.replaceChildren(h("h2", { id: "state-h" }, "State"), h("p", { class: "loading" }, "Loading state…"));
    try {
      const { data, etag: version } = await api("GET", `${base}/state`);
      const desired = h("textarea", { class: "json", "aria-label": "Desired state (JSON)" }, JSON.stringify(data.desired ?? {}, null, 2));
      const out = h("div");
      stateBox.replaceChildren(h("h2", { id: "state-h" }, "State"),
        h("h3", {}, "Reported"), h("pre", { class: "reported" }, JSON.stringify(data.reported ?? null, null, 2)),
        h("h3", {}, "Delta"), h("pre", {}, JSON.stringify(data.delta ?? {}, null, 2)),
        h("h3", {}, "Desired"), canEdit() ? h("form", {
          onsubmit: async (ev) => {
            ev.preventDefault();
            out.replaceChildren();
            let body;
            try { body = JSON.parse(desired.value); } catch (e) { out.replaceChildren(h("div", { class: "error" }, `Not JSON: ${e.message}`)); return; }
            try {
              await api("PUT", `${base}/state/desired`, body, { headers: version ? { "If-Match": version } : {} });
              toast("Desired state saved");
              loadState();
            } catch (e) {
              out.replaceChildren(problemView(e), e.status === 412 ? h("button", { type: "button", onclick: loadState }, "Reload the latest version") : null);
            }
          },
        }, desired, h("button", { class: "primary" }, "Save desired"), out) : h("pre", {}, JSON.stringify(data.desired ?? {}, null, 2)),
        h("h3", {}, "Retained topics"), (data.retained || []).length === 0 ? h("p", { class: "empty" }, "None.")
          : h("ul", {}, data.retained.map((r) => h("li", {}, h("code", {}, r.topic), ` (QoS ${r.qos}, ${when(r.updated_at)})`))));
    } catch (e) {
      stateBox.replaceChildren(h("h2", { id: "state-h" }, "State"), e.status === 404 ? h("p", { class: "empty" }, "No state yet.") : problemView(e));
    }
  }
  async function loadCerts() {
    certBox.replaceChildren(h("h2", { id: "cert-h" }, "Certificates"), h("p", { class: "loading" }, "Loading certificates…"));
    try {
      const { data } = await api("GET", `${base}/certificates`);
      const out = h("div");
      const csr = h("textarea", { class: "json", "aria-label": "Certificate signing request (PEM)", placeholder: "-----BEGIN CERTIFICATE REQUEST-----" });
      const issue = async (body) => {
        out.replaceChildren();
        try {
          const { data: cert } = await api("POST", `${base}/certificates`, body);
          const bundle = [cert.private_key_pem, cert.certificate_pem, cert.chain_pem].filter(Boolean).join("\n");
          const url = URL.createObjectURL(new Blob([bundle], { type: "application/x-pem-file" }));
          out.replaceChildren(h("div", { class: "secret", role: "alert" },
            `Certificate ${cert.serial} issued. `, cert.private_key_pem ? "The private key is shown only now: " : "",
            h("a", { href: url, download: `${d}.pem` }, "Download PEM bundle")));
          loadCertsList();
        } catch (e) { out.replaceChildren(problemView(e)); }
      };
      const list = h("div");
      const loadCertsList = async () => {
        try {
          const { data: fresh } = await api("GET", `${base}/certificates`);
          paintList(fresh.items || fresh);
        } catch (e) { list.replaceChildren(problemView(e)); }
      };
      const paintList = (items) => list.replaceChildren(items.length === 0 ? h("p", { class: "empty" }, "No certificates.")
        : h("div", { class: "table-wrap" }, h("table", {},
          h("thead", {}, h("tr", {}, h("th", {}, "Serial"), h("th", {}, "Status"), h("th", { class: "hide-narrow" }, "Expires"), canEdit() ? h("th", {}, "") : null)),
          h("tbody", {}, items.map((c) => h("tr", {},
            h("td", {}, h("code", {}, c.serial)), h("td", {}, c.status), h("td", { class: "hide-narrow" }, when(c.not_after)),
            canEdit() ? h("td", {}, c.status === "active" ? h("button", { type: "button", class: "danger", onclick: async () => {
              try { await api("POST", `${base}/certificates/${c.serial}/revoke`, { reason: "key_compromise" }); loadCertsList(); } catch (e) { out.replaceChildren(problemView(e)); }
            } }, "Revoke") : "") : null))))));
      paintList(data.items || data);
      certBox.replaceChildren(h("h2", { id: "cert-h" }, "Certificates"), list,
        canEdit() ? h("div", {},
          h("div", { class: "toolbar" }, h("button", { type: "button", class: "primary", onclick: () => issue({}) }, "Issue with a server-made key")),
          h("form", { onsubmit: (ev) => { ev.preventDefault(); issue({ csr_pem: csr.value }); } }, csr, h("button", {}, "Issue from CSR"))) : null,
        out);
    } catch (e) {
      certBox.replaceChildren(h("h2", { id: "cert-h" }, "Certificates"), problemView(e));
    }
  }
}

async function pageAudit(t) {
  const body = h("div", {}, h("p", { class: "loading" }, "Loading audit log…"));
  mount(h("h1", {}, "Audit log"), body);
  try {
    const { data } = await api("GET", `/v1/tenants/${t}/audit?limit=200`);
    body.replaceChildren(data.items.length === 0 ? h("p", { class: "empty" }, "Nothing has changed yet.")
      : h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Actor"), h("th", {}, "Action"), h("th", {}, "Target"), h("th", { class: "hide-narrow" }, "Request"))),
        h("tbody", {}, data.items.map((a) => h("tr", {},
          h("td", {}, when(a.at)), h("td", {}, a.actor), h("td", {}, h("code", {}, a.action)), h("td", {}, a.target),
          h("td", { class: "hide-narrow" }, h("code", {}, a.request_id || ""))))))));
  } catch (e) { body.replaceChildren(problemView(e)); }
}

async function pageWebhooks(t) {
  const body = h("div", {}, h("p", { class: "loading" }, "Loading webhooks…"));
  mount(h("h1", {}, "Webhooks"), body);
  try {
    const { data } = await api("GET", `/v1/tenants/${t}/webhooks`);
    const items = data.items || [];
    body.replaceChildren(items.length === 0 ? h("p", { class: "empty" }, "No webhook endpoints.")
      : h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "URL"), h("th", {}, "Events"), h("th", {}, "Enabled"))),
        h("tbody", {}, items.map((w) => h("tr", {}, h("td", {}, h("code", {}, w.url)), h("td", {}, (w.events || []).join(", ")), h("td", {}, w.enabled ? "yes" : "no")))))));
  } catch (e) { body.replaceChildren(problemView(e)); }
}

// ---------- router

function route() {
  stopLive();
  if (!session.token) return renderSignIn();
  if (Date.now() > session.expiresAt) return signOut("Your session expired; sign in again.");
  renderChrome();
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/";
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  document.getElementById("main").focus({ preventScroll: true });
  if (parts.length === 0) {
    location.hash = session.claims.tenant ? `#/t/${session.claims.tenant}` : "#/tenants";
    return;
  }
  if (parts[0] === "tenants") return pageTenants();
  if (parts[0] === "t" && parts[1]) {
    const t = parts[1];
    if (parts.length === 2) return pageOverview(t);
    if (parts[2] === "devices" && parts[3]) return pageDevice(t, parts[3]);
    if (parts[2] === "devices") return pageDevices(t);
    if (parts[2] === "audit") return pageAudit(t);
    if (parts[2] === "webhooks") return pageWebhooks(t);
  }
  mount(h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/" }, "Go home")));
}

window.addEventListener("hashchange", route);
route();
