// A small hand-written SVG line chart: enough for an hour of ten-second
// buckets, with no library to vendor and nothing fetched from elsewhere.
// Colours come from CSS (currentColor and classes), so dark mode follows.

import { h } from "./lib.js";

const W = 600;
const H = 160;
const PAD = { left: 44, right: 8, top: 10, bottom: 22 };

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmt(v) {
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}k`;
  return String(Number.isInteger(v) ? v : Number(v.toFixed(2)));
}

// `points` is [{t: Date, v: number}], oldest first. Returns a <figure>
// whose <svg> has a text summary for screen readers.
// `now`, when given, is the current value (else the last point's).
export function lineChart({ title, unit, points, id, now }) {
  const last = now ?? (points.length ? points[points.length - 1].v : 0);
  const peak = points.reduce((m, p) => Math.max(m, p.v), 0);
  const max = niceMax(peak);
  const x0 = points.length ? points[0].t.getTime() : 0;
  const x1 = points.length ? points[points.length - 1].t.getTime() : 1;
  const sx = (t) => PAD.left + ((t - x0) / Math.max(1, x1 - x0)) * (W - PAD.left - PAD.right);
  const sy = (v) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  const line = points.map((p) => `${sx(p.t.getTime()).toFixed(1)},${sy(p.v).toFixed(1)}`).join(" ");
  const area = points.length
    ? `${sx(x0).toFixed(1)},${sy(0)} ${line} ${sx(x1).toFixed(1)},${sy(0)}` : "";
  const summary = `${title}: now ${fmt(last)} ${unit}, peak ${fmt(peak)} ${unit} over the last hour`;
  const grid = [0, max / 2, max].map((v) => h("g", {},
    h("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: sy(v), y2: sy(v) }),
    h("text", { class: "tick", x: PAD.left - 6, y: sy(v) + 4, "text-anchor": "end" }, fmt(v))));
  const hours = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const xticks = points.length ? [
    h("text", { class: "tick", x: PAD.left, y: H - 6, "text-anchor": "start" }, hours(x0)),
    h("text", { class: "tick", x: W - PAD.right, y: H - 6, "text-anchor": "end" }, hours(x1)),
  ] : [];
  return h("figure", { class: "chart", id },
    h("figcaption", {}, h("span", {}, title), " ", h("strong", { class: "now" }, fmt(last)), ` ${unit}`),
    h("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary },
      h("title", {}, summary), grid,
      h("polygon", { class: "area", points: area }),
      h("polyline", { class: "line", points: line }),
      xticks));
}
