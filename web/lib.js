// What every page shares: DOM helpers, the API client with its
// problem+json errors, the in-memory session and the live event stream.
// The bearer token lives only in this module's memory: a reload signs out,
// which is the price of never putting a credential in localStorage.

export const session = { token: null, claims: null, expiresAt: 0, onExpired: () => {} };
const live = { aborts: [] };

// ---------- DOM helpers (text nodes only: API data is never parsed as HTML)

export function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "polyline", "polygon", "line", "text", "g", "title", "rect", "path"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function mount(...nodes) {
  document.getElementById("main").replaceChildren(...nodes);
}

export function toast(text) {
  const box = document.getElementById("toast");
  const item = h("div", {}, text);
  box.append(item);
  setTimeout(() => item.remove(), 5000);
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function time(iso) {
  const d = new Date(iso);
  return h("time", { datetime: iso }, Number.isNaN(d.getTime()) ? iso : d.toLocaleTimeString());
}

export const loading = (what) => h("p", { class: "loading", role: "status" }, `Loading ${what}…`);
export const empty = (text) => h("p", { class: "empty" }, text);

export function table(headers, rows, attrs = {}) {
  return h("div", { class: "table-wrap" }, h("table", attrs,
    h("thead", {}, h("tr", {}, headers.map((x) => (x instanceof Node ? x : h("th", { scope: "col" }, x))))),
    h("tbody", {}, rows)));
}

// ---------- API

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export async function api(method, path, body, extra = {}) {
  const headers = { Accept: "application/json, application/problem+json", ...(extra.headers || {}) };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = extra.contentType || "application/json";
    payload = typeof body === "string" ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body: payload });
  } catch (err) {
    throw new ApiError(0, { title: "Network error", detail: `the server could not be reached (${err.message})` });
  }
  if (res.status === 401 && session.token) {
    session.onExpired("Your session ended; sign in again.");
    throw new ApiError(401, { detail: "signed out" });
  }
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json().catch(() => ({})) : await res.text();
  if (!res.ok) throw new ApiError(res.status, typeof data === "object" ? data : { detail: data });
  return { data, etag: res.headers.get("etag") };
}

// An API error as the user should see it: the problem's title and detail,
// and each field error with its JSON pointer.
export function problemView(err) {
  if (!(err instanceof ApiError)) return h("div", { class: "error", role: "alert" }, String(err));
  const p = err.problem || {};
  return h("div", { class: "error", role: "alert" },
    h("strong", {}, p.title || `Error ${err.status}`), ": ", p.detail || err.message,
    Array.isArray(p.errors) && p.errors.length
      ? h("ul", {}, p.errors.map((e) => h("li", {}, h("code", {}, e.pointer || ""), " ", e.detail)))
      : null);
}

// Pages through a list endpoint (`{items, next_cursor}`) up to `max` items.
export async function listAll(path, max = 10000) {
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

// The broker's reasons for dropping a message (the API's SessionDrops and
// TenantDrops fields), as the pages name them.
export const DROP_REASONS = {
  slow_consumer: "slow consumer",
  queue_full: "queue full",
  queue_bytes: "queue full (bytes)",
  tenant_queue_full: "tenant queues full",
  offline_qos0: "QoS 0 while offline",
  expired: "expired",
  too_large: "too large for the client",
};

// "12 (slow consumer 10, expired 2)" for a drops object; its total first.
export function dropsText(drops) {
  const parts = Object.entries(DROP_REASONS).filter(([k]) => drops[k] > 0).map(([k, label]) => `${label} ${drops[k]}`);
  const total = Object.keys(DROP_REASONS).reduce((n, k) => n + (drops[k] || 0), 0);
  return { total, text: parts.length === 0 ? "none" : `${total} (${parts.join(", ")})` };
}

export const role = () => session.claims?.role;
export const canEdit = () => ["platform-admin", "tenant-admin", "operator"].includes(role());
export const isAdmin = () => ["platform-admin", "tenant-admin"].includes(role());

// ---------- live: SSE over fetch (so the bearer header can be sent) and
// page timers, all stopped when the page changes.

export function stopLive() {
  for (const a of live.aborts) a.abort();
  live.aborts = [];
}

// A timer that ends with the page (charts refresh from the server's
// series) or when the returned function is called.
export function every(ms, fn) {
  const ctrl = new AbortController();
  live.aborts.push(ctrl);
  const id = setInterval(() => { if (!document.hidden) fn(); }, ms);
  ctrl.signal.addEventListener("abort", () => clearInterval(id));
  return () => ctrl.abort();
}

export async function followEvents(tenant, query, onEvent, onState = () => {}) {
  const ctrl = new AbortController();
  live.aborts.push(ctrl);
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
            let ev = null;
            try { ev = JSON.parse(data); } catch { /* a keep-alive or a non-JSON frame */ }
            if (ev) onEvent(ev);
          }
        }
      }
    } catch {
      if (ctrl.signal.aborted) return;
      onState("reconnecting");
    }
    if (ctrl.signal.aborted) return;
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 15000);
  }
}

export function liveLabel(el) {
  return (s) => {
    el.textContent = s === "live" ? "live" : s === "unavailable" ? "live events not available" : "reconnecting…";
    el.dataset.state = s;
  };
}
