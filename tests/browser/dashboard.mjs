// The dashboard in headless Debian Chromium, against a real `fleetmq
// serve` started by tests/e2e/dashboard_browser.rs, with the Debian
// mosquitto clients as the device. Every step prints a line; a failure
// prints the step, saves a screenshot of it and exits non-zero.
//
// Env: BASE_URL, TENANT, ADMIN_KEY (tenant-admin API key), VIEWER_KEY,
// MQTTS_PORT, MQTT_PORT (plain, for a service credential), CA_FILE, SHOTS
// (screenshot folder), WORK (scratch folder). The server runs with a
// 16-message queue bound and a 1 s slow-consumer timeout.

import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env("BASE_URL");
const TENANT = env("TENANT");
const SHOTS = env("SHOTS");
const WORK = env("WORK");
const DEVICE = "sensor-1";
const WAIT = 30_000;
mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"],
});
const children = [];

// The webhook receiver: answers every delivery 200 with a body the
// delivery log must show.
const hits = [];
const receiver = createServer((req, res) => {
  let body = "";
  req.on("data", (c) => { body += c; });
  req.on("end", () => {
    hits.push({ url: req.url, body });
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end("ok from the test receiver");
  });
});
await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
const HOOK_URL = `http://127.0.0.1:${receiver.address().port}/hook`;
let current = "start";
let page;

async function shot(p, name) {
  // Toasts are transient; they would cover the page in a still.
  await p.evaluate(() => document.getElementById("toast")?.replaceChildren());
  await p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  console.log(`  screenshot ${join(SHOTS, `${name}.png`)}`);
}

async function step(name, fn) {
  current = name;
  console.log(`step: ${name}`);
  await fn();
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

// A mosquitto client as the device, over the mqtts listener.
function mosquitto(tool, files, args) {
  const child = spawn(tool, ["-h", "localhost", "-p", env("MQTTS_PORT"), "-V", "mqttv5",
    "--cafile", env("CA_FILE"), "--cert", files.cert, "--key", files.key, "-i", DEVICE, ...args],
  { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  const out = { text: "", err: "", exit: null };
  child.stdout.on("data", (b) => { out.text += b; });
  child.stderr.on("data", (b) => { out.err += b; });
  out.done = new Promise((resolve) => child.on("exit", (code) => { out.exit = code; resolve(code); }));
  out.child = child;
  return out;
}

async function until(what, fn) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// A bearer token for an API key, for calls the page does not make.
async function tokenFor(key) {
  const res = await fetch(`${BASE}/v1/auth/token`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ api_key: key }),
  });
  check(res.ok, `token for an API key: ${res.status}`);
  return (await res.json()).access_token;
}

async function signIn(p, key) {
  await p.goto(BASE);
  await p.locator("#api-key").fill(key);
  await p.getByRole("button", { name: "Sign in" }).click();
  await p.getByRole("heading", { name: `Tenant ${TENANT}` }).waitFor({ timeout: WAIT });
}

try {
  const ctx = await browser.newContext({ acceptDownloads: true, viewport: { width: 1440, height: 1000 }, colorScheme: "light" });
  page = await ctx.newPage();
  page.on("console", (m) => { if (m.type() === "error") console.log(`  browser console: ${m.text()}`); });
  page.on("pageerror", (e) => console.log(`  page error: ${e.message}`));

  await step("the sign-in page is keyboard navigable and shows API errors with their detail", async () => {
    await page.goto(BASE);
    await page.keyboard.press("Tab");
    check(await page.evaluate(() => document.activeElement?.classList.contains("skip")), "Tab reaches the skip link first");
    await page.locator("#api-key").fill("fmq_not_a_key");
    await page.keyboard.press("Enter");
    await page.locator("#main .error").waitFor({ timeout: WAIT });
    const text = await page.locator("#main .error").innerText();
    check(text.length > 10, `a problem detail is shown: ${text}`);
    await shot(page, "signin-error");
  });

  await step("sign in with a tenant-admin API key", async () => {
    await signIn(page, env("ADMIN_KEY"));
    await page.locator(".cards .card.total").waitFor({ timeout: WAIT });
    await shot(page, "overview-empty");
  });

  await step("create a device", async () => {
    await page.getByRole("link", { name: "Devices" }).click();
    await page.getByLabel("New device id").fill(DEVICE);
    await page.getByLabel("Labels", { exact: true }).fill("site=berlin,kind=meter");
    await page.getByRole("button", { name: "Create device" }).click();
    await page.locator(`tr[data-device="${DEVICE}"]`).waitFor({ timeout: WAIT });
    await shot(page, "devices");
    await page.getByRole("link", { name: DEVICE, exact: true }).click();
    await page.locator('#device-status[data-status="offline"]').waitFor({ timeout: WAIT });
  });

  // Set once the device page is open: a reload would lose it.
  await page.evaluate(() => { window.__sameDocument = true; });
  const files = { cert: join(WORK, "sensor-1.crt"), key: join(WORK, "sensor-1.key") };

  await step("issue a certificate with a server-made key and download key and chain", async () => {
    await page.getByRole("button", { name: "Issue with a server-made key" }).click();
    const link = page.getByRole("link", { name: "Download key and chain (PEM)" });
    await link.waitFor({ timeout: WAIT });
    const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
    const saved = join(WORK, download.suggestedFilename());
    await download.saveAs(saved);
    const pem = readFileSync(saved, "utf8");
    const key = pem.match(/-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----/);
    const certs = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) || [];
    check(key, "the download holds a private key");
    check(certs.length >= 2, `the download holds the certificate and its chain (${certs.length} certificates)`);
    writeFileSync(files.key, `${key[0]}\n`, { mode: 0o600 });
    writeFileSync(files.cert, `${certs.join("\n")}\n`);
    await page.locator("tr[data-serial] .cert-status", { hasText: "active" }).waitFor({ timeout: WAIT });
    await page.getByText("Downloaded.").waitFor({ timeout: WAIT });
  });

  let sub;
  await step("an MQTT client with that certificate turns the device online in the open page", async () => {
    sub = mosquitto("mosquitto_sub", files, ["-q", "1", "-t", `commands/${DEVICE}/#`, "-F", "%t %p"]);
    await page.locator('#device-status[data-status="online"]').waitFor({ timeout: WAIT });
    check(await page.evaluate(() => window.__sameDocument === true), "the page was not reloaded");
    await page.locator("table.presence").getByText("connected").first().waitFor({ timeout: WAIT });
  });

  await step("edit desired state in the page and the device receives it", async () => {
    await page.locator("#desired-json").fill('{"led": "on", "interval": 30}');
    await page.getByRole("button", { name: "Save desired" }).click();
    await until("the desired state on the device", () => sub.text.includes(`commands/${DEVICE}/state/desired`) && sub.text.includes('"led"'));
    const line = sub.text.split("\n").find((l) => l.startsWith(`commands/${DEVICE}/state/desired `));
    const desired = JSON.parse(line.slice(line.indexOf(" ") + 1));
    check(desired.led === "on" && desired.interval === 30, `the device got ${line}`);
    await page.getByText("version 1").waitFor({ timeout: WAIT });
  });

  await step("publish reported state and see it in the page", async () => {
    // One connection per device id: the subscriber goes before the publisher comes.
    sub.child.kill("SIGTERM");
    await sub.done;
    await page.locator('#device-status[data-status="offline"]').waitFor({ timeout: WAIT });
    const pub = mosquitto("mosquitto_pub", files, ["-q", "1", "-t", `devices/${DEVICE}/state/reported`, "-m", '{"temp": 21.5, "led": "off"}']);
    check((await pub.done) === 0, `mosquitto_pub succeeded: ${pub.err}`);
    await until("the reported state in the page", async () => (await page.locator("pre.reported").innerText()).includes("21.5"));
    await page.locator("ol.messages").getByText(`devices/${DEVICE}/state/reported`).first().waitFor({ timeout: WAIT });
    // Telemetry for the charts and top talkers.
    const telemetry = mosquitto("mosquitto_pub", files, ["-q", "1", "-t", `devices/${DEVICE}/telemetry`, "-m", '{"temp": 21.5}', "--repeat", "20"]);
    check((await telemetry.done) === 0, `mosquitto_pub --repeat succeeded: ${telemetry.err}`);
    await page.locator("ol.messages").getByText(`devices/${DEVICE}/telemetry`).first().waitFor({ timeout: WAIT });
    check(await page.evaluate(() => window.__sameDocument === true), "the page was not reloaded");
  });

  await step("the device's persistent session shows in the page, which ends it", async () => {
    await page.locator('#session[data-session="none"]').waitFor({ timeout: WAIT });
    // Session expiry above 0: kept in the database after it leaves.
    const keep = mosquitto("mosquitto_sub", files, ["-c", "-x", "3600", "-q", "1", "-t", `commands/${DEVICE}/#`, "-E"]);
    check((await keep.done) === 0, `mosquitto_sub -c succeeded: ${keep.err}`);
    await page.locator('#session[data-session="offline"]').waitFor({ timeout: WAIT });
    await shot(page, "device-session");
    await page.getByRole("button", { name: "End session" }).click();
    await page.locator('#session[data-session="none"]').waitFor({ timeout: WAIT });
    check(await page.evaluate(() => window.__sameDocument === true), "the page was not reloaded");
  });

  await step("a subscriber that stops reading while a service floods it shows a slow consumer's drops", async () => {
    // A persistent QoS 0 subscription (so the session is listed), stopped
    // once subscribed: its socket fills, then its 16-message queue, and
    // past the 1 s pause the broker drops for it.
    const slow = mosquitto("mosquitto_sub", files, ["-c", "-x", "3600", "-q", "0", "-t", `commands/${DEVICE}/#`, "-d"]);
    await until("the SUBACK", () => slow.text.includes("SUBACK"));
    slow.child.kill("SIGSTOP");
    await page.locator('#session[data-session="connected"]').waitFor({ timeout: WAIT });
    const token = await tokenFor(env("ADMIN_KEY"));
    const res = await fetch(`${BASE}/v1/tenants/${TENANT}/service-credentials`, {
      method: "POST", headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ name: "flooder", publish: [`commands/${DEVICE}/#`] }),
    });
    check(res.status === 201, `a service credential (${res.status})`);
    const cred = await res.json();
    const payload = join(WORK, "flood.bin");
    writeFileSync(payload, Buffer.alloc(64 * 1024, "x"));
    const flood = spawn("mosquitto_pub", ["-h", "127.0.0.1", "-p", env("MQTT_PORT"), "-V", "mqttv5", "-i", "flooder",
      "-u", cred.username, "-P", cred.password, "-q", "0", "-t", `commands/${DEVICE}/flood`, "-f", payload, "--repeat", "300"],
    { stdio: ["ignore", "ignore", "pipe"] });
    children.push(flood);
    let floodErr = "";
    flood.stderr.on("data", (b) => { floodErr += b; });
    const floodCode = await new Promise((resolve) => flood.on("exit", resolve));
    check(floodCode === 0, `mosquitto_pub flood succeeded: ${floodErr}`);
    const cell = page.locator("#session .session-drops");
    await until("drops in the session box", async () => Number(await cell.getAttribute("data-drops")) > 0);
    const text = await cell.innerText();
    check(text.includes("slow consumer"), `the reason is named: ${text}`);
    await shot(page, "device-session-drops");
    // SIGKILL ends even a stopped process; the device goes offline.
    slow.child.kill("SIGKILL");
    await slow.done;
    await page.locator('#device-status[data-status="offline"]').waitFor({ timeout: WAIT });
  });

  await step("revoke the certificate in the page and see the device go offline", async () => {
    sub = mosquitto("mosquitto_sub", files, ["-q", "1", "-t", `commands/${DEVICE}/#`, "-F", "%t %p"]);
    await page.locator('#device-status[data-status="online"]').waitFor({ timeout: WAIT });
    await shot(page, "device");
    await page.getByRole("button", { name: "Revoke" }).click();
    await page.locator("tr[data-serial] .cert-status", { hasText: "revoked" }).waitFor({ timeout: WAIT });
    await page.locator('#device-status[data-status="offline"]').waitFor({ timeout: WAIT });
    check(await page.evaluate(() => window.__sameDocument === true), "the page was not reloaded");
    await shot(page, "device-revoked");
  });

  await step("the overview charts connections and messages, top talkers and lifecycle events", async () => {
    await page.getByRole("link", { name: "Overview" }).click();
    await page.locator("#chart-messages svg polyline").waitFor({ timeout: WAIT });
    await page.locator("#chart-connections svg polyline").waitFor({ timeout: WAIT });
    await page.locator("table.talkers").getByText(DEVICE).waitFor({ timeout: WAIT });
    check(await page.locator("table.talkers td.num").first().innerText() === "21", "20 telemetry messages and 1 report counted");
    await page.locator("table.lifecycle").getByText("device.disconnected").first().waitFor({ timeout: WAIT });
    // The slow consumer's drops, for the tenant.
    const dropped = page.locator("#drops .card.slow-consumer");
    await until("the tenant's slow-consumer drops", async () => Number(await dropped.getAttribute("data-drops")) > 0);
    check((await dropped.innerText()).includes("slow consumer"), "the card is labelled");
    const label = await page.locator("#chart-messages svg").getAttribute("aria-label");
    check(/Messages: now .* per second/.test(label), `the chart has a text summary: ${label}`);
    await shot(page, "overview");
  });

  await step("webhooks: API errors with their detail, an endpoint, test ping, delivery log, redeliver", async () => {
    await page.getByRole("link", { name: "Webhooks" }).click();
    await page.getByText("No webhook endpoints.").waitFor({ timeout: WAIT });
    await page.getByLabel("Endpoint URL").fill("https://example.invalid/hook");
    await page.getByRole("button", { name: "Add endpoint" }).click();
    await page.locator("#main .error").getByText("/url").waitFor({ timeout: WAIT });
    await page.getByLabel("Endpoint URL").fill(HOOK_URL);
    await page.getByRole("button", { name: "Add endpoint" }).click();
    await page.locator("#main .secret").getByText("Signing secret").waitFor({ timeout: WAIT });
    await page.locator("article.webhook").waitFor({ timeout: WAIT });
    await page.getByRole("button", { name: "Send test ping" }).click();
    // The log refreshes itself while the page is open.
    await page.locator("table.deliveries .badge.delivered").first().waitFor({ timeout: WAIT });
    await page.locator("table.deliveries details pre", { hasText: "ok from the test receiver" }).first().waitFor({ state: "attached", timeout: WAIT });
    check(hits.length >= 1, "the receiver got the ping");
    const before = hits.length;
    await page.getByRole("button", { name: "Redeliver" }).first().click();
    await until("the redelivery at the receiver", () => hits.length > before);
    await shot(page, "webhooks");
  });

  await step("at 375 px in dark mode nothing scrolls sideways", async () => {
    const phone = await browser.newContext({ viewport: { width: 375, height: 800 }, colorScheme: "dark" });
    const p = await phone.newPage();
    await signIn(p, env("ADMIN_KEY"));
    await p.goto(`${BASE}/#/t/${TENANT}/devices/${DEVICE}`);
    await p.locator("#device-status").waitFor({ timeout: WAIT });
    await p.locator("pre.reported").waitFor({ timeout: WAIT });
    const width = await p.evaluate(() => document.documentElement.scrollWidth);
    check(width <= 375, `page is ${width} px wide at 375`);
    const bg = await p.evaluate(() => getComputedStyle(document.body).backgroundColor);
    check(bg !== "rgb(255, 255, 255)", `dark mode background: ${bg}`);
    await shot(p, "device-375-dark");
    await phone.close();
  });

  await step("a viewer sees no edit buttons and cannot edit", async () => {
    const vctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const p = await vctx.newPage();
    await signIn(p, env("VIEWER_KEY"));
    await p.goto(`${BASE}/#/t/${TENANT}/devices`);
    await p.locator(`tr[data-device="${DEVICE}"]`).waitFor({ timeout: WAIT });
    check(await p.getByRole("button", { name: "Create device" }).count() === 0, "no Create device for a viewer");
    await p.goto(`${BASE}/#/t/${TENANT}/devices/${DEVICE}`);
    await p.locator("pre.desired").waitFor({ timeout: WAIT });
    await p.locator("tr[data-serial]").first().waitFor({ timeout: WAIT });
    for (const name of ["Save desired", "Issue with a server-made key", "Revoke", "Disable", "Delete", "New MQTT password"]) {
      check(await p.getByRole("button", { name }).count() === 0, `no "${name}" button for a viewer`);
    }
    check(await p.locator("#desired-json").count() === 0, "no desired editor for a viewer");
    await shot(p, "device-viewer");
    // And the API says no as well, for the viewer's own token.
    const token = await fetch(`${BASE}/v1/auth/token`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ api_key: env("VIEWER_KEY") }),
    }).then((r) => r.json());
    const put = await fetch(`${BASE}/v1/tenants/${TENANT}/devices/${DEVICE}/state/desired`, {
      method: "PUT", headers: { "Content-Type": "application/json", Authorization: `Bearer ${token.access_token}` }, body: '{"led": "off"}',
    });
    check(put.status === 403, `a viewer's desired-state PUT is refused (${put.status})`);
    check((put.headers.get("content-type") || "").includes("problem+json"), "as problem+json");
    await vctx.close();
  });

  console.log("all steps passed");
} catch (err) {
  console.log(`FAILED at step "${current}": ${err.stack || err}`);
  if (page) await shot(page, "failure").catch(() => {});
  process.exitCode = 1;
} finally {
  // A stopped child would not act on SIGTERM.
  for (const c of children) if (c.exitCode === null) { c.kill("SIGCONT"); c.kill("SIGTERM"); }
  receiver.close();
  await browser.close();
}
