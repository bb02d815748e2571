// fleetmq dashboard: a small single-page app over the REST API (/v1).
// No framework and no build step, so `cargo run` serves it as it is. This
// module signs in and out, draws the header and routes; the pages are in
// overview.js, devices.js, device.js and admin.js.

import { pageAudit, pageTenants, pageWebhooks } from "./admin.js";
import { pageDevice } from "./device.js";
import { pageDevices } from "./devices.js";
import { api, h, isAdmin, mount, problemView, role, session, stopLive } from "./lib.js";
import { pageOverview } from "./overview.js";

function decodeClaims(token) {
  const part = token.split(".")[1];
  if (!part) throw new Error("that is not a JWT");
  const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
  return JSON.parse(json);
}

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
  history.replaceState(null, "", "#/");
  renderSignIn(message);
}
session.onExpired = signOut;

function renderSignIn(message) {
  const key = h("input", { id: "api-key", name: "api_key", type: "password", autocomplete: "off" });
  const tokenInput = h("textarea", { id: "token", name: "token", rows: 3 });
  const out = h("div", { "aria-live": "polite" }, message ? h("div", { class: "error", role: "alert" }, message) : null);
  const form = h("form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      out.replaceChildren();
      try {
        if (tokenInput.value.trim()) return signIn(tokenInput.value.trim());
        if (!key.value.trim()) { out.replaceChildren(h("div", { class: "error", role: "alert" }, "Enter an API key or a token.")); return; }
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
    h("h1", { id: "signin-h" }, "Sign in to fleetmq"),
    h("p", { class: "muted" }, "The session is kept in this tab's memory only: reloading signs you out."), form));
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
  const here = location.hash.split("?")[0];
  for (const [href, text] of links) {
    const current = here === href || (text === "Devices" && here.startsWith(`${href}/`));
    nav.append(h("a", { href, "aria-current": current ? "page" : null }, text));
  }
  who.append(h("span", { class: "whoami" }, `${session.claims.sub} · ${role()}${session.claims.tenant ? ` · ${session.claims.tenant}` : ""}`),
    h("button", { type: "button", onclick: () => signOut() }, "Sign out"));
}

function currentTenant() {
  const m = location.hash.match(/^#\/t\/([a-z0-9-]+)/);
  return m ? m[1] : session.claims?.tenant || null;
}

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
