// Small SVG charts, no library. Every chart has tick labels on both axes (class tick-x / tick-y, a browser test
// counts them), axis titles, a legend when it has several series, and a tooltip on hover or tap; figure() puts it
// in a <figure> with its caption. The drawing width follows the viewport, so labels keep a readable size.
import { h, svg } from "./dom.js";
import { tipBox as tipped } from "./tip.js";

export const chartWidth = () => Math.round(Math.max(300, Math.min(600, (window.innerWidth || 600) - 40)));

// About n round values from lo to hi (both included in the span they cover).
export function niceTicks(lo, hi, n = 5) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  if (out[out.length - 1] < hi - step * 1e-9) out.push(Number((out[out.length - 1] + step).toPrecision(12)));
  return out;
}

// Round values for a log axis covering [lo, hi] (lo > 0): 1-1.5-2-3-5-7 times powers of ten on a short span,
// 1-2-5 on a medium one, powers of ten on a long one; the first is at or below lo, so the bars have a base.
function logTicks(lo, hi) {
  const steps = hi / lo < 10 ? [1, 1.5, 2, 3, 5, 7] : hi / lo < 100 ? [1, 2, 5] : [1];
  const all = [];
  for (let e = Math.floor(Math.log10(lo)) - 1; e <= Math.ceil(Math.log10(hi)); e++) for (const m of steps) all.push(Number((m * 10 ** e).toPrecision(6)));
  const below = all.filter((v) => v <= lo * 1.0001);
  const start = below.length ? below[below.length - 1] : all[0];
  return all.filter((v) => v >= start && v <= hi * 1.0001);
}

function linear(d0, d1, r0, r1, log = false) {
  const f = log ? Math.log10 : (v) => v;
  const a = f(d0), b = f(d1);
  return (v) => r0 + ((f(v) - a) / ((b - a) || 1)) * (r1 - r0);
}

// The shared parts: the box, axis lines and titles. Plot area: x from L to W - R, y from T to H - B.
function frame({ W, H, L, R = 12, T = 12, B = 42, title, xTitle, yTitle, role = "img" }) {
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role, "aria-label": title },
    svg("title", {}, title),
    svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }),
    svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }),
    svg("text", { class: "axis-title", x: L + (W - R - L) / 2, y: H - 6, "text-anchor": "middle" }, xTitle),
    svg("text", { class: "axis-title", x: 12, y: T + (H - B - T) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${T + (H - B - T) / 2})` }, yTitle));
  return { root, W, H, L, R, T, B };
}

// Value axis on the left: a grid line and a label per tick.
function yValues(f, ticks, y, format) {
  for (const t of ticks) {
    f.root.append(svg("line", { class: "grid", x1: f.L, x2: f.W - f.R, y1: y(t), y2: y(t) }),
      svg("text", { class: "tick tick-y", x: f.L - 5, y: y(t) + 4, "text-anchor": "end" }, format(t)));
  }
}

// Value axis at the bottom.
function xValues(f, ticks, x, format) {
  for (const t of ticks) {
    f.root.append(svg("line", { class: "grid", x1: x(t), x2: x(t), y1: f.T, y2: f.H - f.B }),
      svg("text", { class: "tick tick-x", x: x(t), y: f.H - f.B + 15, "text-anchor": "middle" }, format(t)));
  }
}

// Category labels along the bottom, thinned so they never overlap (each label is about 7 px a character).
function xCategories(f, labels, x) {
  const longest = Math.max(1, ...labels.map((s) => String(s).length));
  const room = (f.W - f.L - f.R) / Math.max(1, labels.length);
  const every = Math.max(1, Math.ceil((longest * 7 + 6) / room));
  labels.forEach((lab, i) => {
    if (i % every === 0) {
      f.root.append(svg("text", { class: "tick tick-x", x: x(i), y: f.H - f.B + 15, "text-anchor": "middle" }, lab));
    }
  });
}

function legend(series) {
  return h("ul", { class: "legend" }, series.map((s) => h("li", {},
    h("span", { class: `swatch${s.dash ? " dashed" : ""}`, style: `background:${s.dash ? "transparent" : s.color};border-color:${s.color}` }), s.name)));
}

// A tooltip's text on a mark: data-tip for the custom tooltip, <title> for screen readers and old browsers.
const mark = (el, text) => { el.setAttribute("data-tip", text); el.append(svg("title", {}, text)); return el; };

function whisker(x, y0, y1, color) {
  return svg("path", { d: `M${x - 3},${y0} H${x + 3} M${x},${y0} V${y1} M${x - 3},${y1} H${x + 3}`, stroke: color, "stroke-width": 1.2, fill: "none" });
}

// Grouped bars per category; a series may carry lo/hi (an interval drawn as a whisker on each bar).
export function barChart({ labels, series, title, xTitle = "Layer", yTitle = "", height = 240, format = String, tickFormat = format, max, integer = false }) {
  const top = Math.max(max ?? 0, ...series.flatMap((s) => [...s.values, ...(s.hi || [])].map((v) => v || 0)));
  const ticks = niceTicks(0, top > 0 ? top : 1, 4).filter((t) => !integer || Number.isInteger(t));
  const f = frame({ W: chartWidth(), H: height, L: 58, title, xTitle, yTitle });
  const y = linear(0, ticks[ticks.length - 1], f.H - f.B, f.T);
  yValues(f, ticks, y, tickFormat);
  const slot = (f.W - f.L - f.R) / labels.length, bw = Math.max(1.5, (slot * 0.8) / series.length);
  const x = (i) => f.L + i * slot + slot / 2;
  labels.forEach((lab, i) => series.forEach((s, j) => {
    const v = s.values[i];
    if (v == null) return;
    const bx = f.L + i * slot + slot * 0.1 + j * bw;
    const text = `${s.name}, ${xTitle.toLowerCase()} ${lab}: ${format(v)}${s.lo && s.lo[i] != null ? ` [${format(s.lo[i])}, ${format(s.hi[i])}]` : ""}`;
    f.root.append(mark(svg("rect", { x: bx, y: y(v), width: Math.max(1, bw - 1), height: Math.max(0, y(0) - y(v)), fill: s.color }), text));
    if (s.lo && s.lo[i] != null) f.root.append(whisker(bx + bw / 2 - 0.5, y(s.lo[i]), y(s.hi[i]), "var(--fg)"));
  }));
  xCategories(f, labels, x);
  return tipped(f.root, series.length > 1 ? legend(series) : null);
}

// Lines over categories (labels) or numbers (xs); a series may carry lo/hi intervals (whiskers at each point).
export function lineChart({ labels, xs, series, title, xTitle = "Layer", yTitle = "", height = 240, max, min = 0, format = String,
  tickFormat = format, xFormat = String, logY = false, points = true }) {
  const vals = series.flatMap((s) => [...s.values, ...(s.lo || []), ...(s.hi || [])]).filter((v) => v != null && (!logY || v > 0));
  const lo = logY ? Math.min(...vals) : Math.min(min, ...vals), hi = Math.max(max ?? -Infinity, ...vals);
  const ticks = logY ? logTicks(lo, hi) : niceTicks(lo, hi > lo ? hi : lo + 1, 4);
  const f = frame({ W: chartWidth(), H: height, L: 58, title, xTitle, yTitle });
  const y = linear(logY ? Math.min(lo, ticks[0]) : ticks[0], logY ? Math.max(hi, ticks[ticks.length - 1]) : ticks[ticks.length - 1], f.H - f.B, f.T, logY);
  yValues(f, ticks, y, tickFormat);
  let x, xAt;
  if (xs) {
    const xt = niceTicks(Math.min(...xs), Math.max(...xs), 5);
    x = linear(xt[0], xt[xt.length - 1], f.L + 6, f.W - f.R - 6);
    xAt = (i) => x(xs[i]);
    xValues(f, xt, x, xFormat);
  } else {
    xAt = (i) => f.L + 14 + (i * (f.W - f.L - f.R - 28)) / Math.max(1, labels.length - 1);
    xCategories(f, labels, xAt);
  }
  const name = (i) => (xs ? `${xTitle.toLowerCase()} ${xFormat(xs[i])}` : `${xTitle.toLowerCase()} ${labels[i]}`);
  series.forEach((s, j) => {
    const off = s.lo && series.length > 1 ? (j - (series.length - 1) / 2) * 4 : 0; // whiskers side by side
    let path = "", pen = false;
    s.values.forEach((v, i) => {
      if (v == null || (logY && v <= 0)) { pen = false; return; }
      path += `${pen ? "L" : "M"}${xAt(i) + off},${y(v)} `;
      pen = true;
    });
    if (path) f.root.append(svg("path", { d: path, fill: "none", stroke: s.color, "stroke-width": 2, "stroke-dasharray": s.dash || null }));
    s.values.forEach((v, i) => {
      if (v == null || (logY && v <= 0)) return;
      const lohi = s.lo && s.lo[i] != null ? ` [${format(s.lo[i])}, ${format(s.hi[i])}]` : "";
      if (lohi) f.root.append(whisker(xAt(i) + off, y(s.lo[i]), y(s.hi[i]), s.color));
      if (points || lohi) f.root.append(mark(svg("circle", { cx: xAt(i) + off, cy: y(v), r: 3.2, fill: s.color }), `${s.name}, ${name(i)}: ${format(v)}${lohi}`));
      else f.root.append(mark(svg("circle", { cx: xAt(i), cy: y(v), r: 6, fill: "transparent" }), `${s.name}, ${name(i)}: ${format(v)}`));
    });
  });
  return tipped(f.root, legend(series.filter((s) => s.values.some((v) => v != null))));
}

// Horizontal bars, one per item (a name on the left axis), from 0 (or 1 on a log axis) with optional intervals;
// items: [{label, value, lo, hi, tip, color}]. ref: {value, label} draws a dashed reference line.
export function hbarChart({ items, title, xTitle, format = String, tickFormat = format, log = false, ref = null, color = "var(--bar)", row = 18, labelChars = 40 }) {
  const W = chartWidth(), room = Math.min(labelChars, Math.floor((W * 0.45 - 12) / 6.2));
  const cut = (s) => (s.length > room ? `${s.slice(0, room - 1)}…` : s);
  const longest = Math.max(4, ...items.map((it) => cut(it.label).length));
  const L = Math.min(Math.round(W * 0.45), 12 + longest * 6.2);
  const f = frame({ W, H: 12 + items.length * row + 42, L, T: 8, title, xTitle, yTitle: "" });
  const vals = items.flatMap((it) => [it.value, it.lo, it.hi]).filter((v) => v != null && (!log || v > 0));
  if (ref) vals.push(ref.value);
  const lo = log ? Math.min(...vals) : Math.min(0, ...vals), hi = Math.max(...vals);
  const ticks = log ? logTicks(lo, hi) : niceTicks(lo, hi > lo ? hi : lo + 1, W < 400 ? 3 : 5);
  const x = linear(log ? Math.min(lo, ticks[0]) : ticks[0], log ? Math.max(hi, ticks[ticks.length - 1]) : ticks[ticks.length - 1], f.L, f.W - f.R, log);
  xValues(f, ticks, x, tickFormat);
  const base = x(log ? Math.max(ticks[0], Math.min(1, hi)) : Math.max(ticks[0], 0));
  items.forEach((it, i) => {
    const cy = f.T + i * row + row / 2;
    f.root.append(svg("text", { class: "tick tick-y", x: f.L - 5, y: cy + 4, "text-anchor": "end" }, cut(it.label)));
    if (it.value == null) return;
    const v = x(it.value), a = Math.min(base, v), w = Math.max(1, Math.abs(v - base));
    const text = it.tip || `${it.label}: ${format(it.value)}${it.lo != null ? ` [${format(it.lo)}, ${format(it.hi)}]` : ""}`;
    f.root.append(mark(svg("rect", { x: a, y: cy - row * 0.32, width: w, height: row * 0.64, fill: it.color || color }), text));
    if (it.lo != null && it.hi != null) {
      f.root.append(svg("path", { d: `M${x(it.lo)},${cy} H${x(it.hi)} M${x(it.lo)},${cy - 3} V${cy + 3} M${x(it.hi)},${cy - 3} V${cy + 3}`, stroke: "var(--fg)", "stroke-width": 1.2, fill: "none" }));
    }
  });
  if (ref) f.root.append(mark(svg("line", { x1: x(ref.value), x2: x(ref.value), y1: f.T, y2: f.H - f.B, stroke: "var(--muted)", "stroke-dasharray": "4 3", "stroke-width": 1.5 }), ref.label));
  return tipped(f.root, null);
}

// Points (x = category index, y = value from 1 down to yMax) for the gene page's layer x rank chart.
export function dotChart({ labels, points, title, xTitle, yTitle, yMax, height = 220, onPick }) {
  const f = frame({ W: chartWidth(), H: height, L: 58, title, xTitle, yTitle, role: "group" });
  const x = (i) => f.L + 14 + (i * (f.W - f.L - f.R - 28)) / Math.max(1, labels.length - 1);
  const y = linear(1, Math.max(2, yMax), f.T + 6, f.H - f.B - 6);
  yValues(f, [...new Set([1, ...niceTicks(0, yMax, 4).filter((t) => t >= 1 && Number.isInteger(t))])], y, String);
  for (const p of points) {
    const dot = svg("circle", { cx: x(p.x), cy: y(p.y), r: 4, class: "dot", tabindex: "0", role: "link", "aria-label": p.text });
    mark(dot, p.text);
    dot.addEventListener("click", () => onPick(p));
    dot.addEventListener("keydown", (ev) => ev.key === "Enter" && onPick(p));
    f.root.append(dot);
  }
  xCategories(f, labels, x);
  return tipped(f.root, null);
}

// A chart in a figure with its caption (what it shows, in words) and an optional note below it.
export const figure = (caption, chart, note = null) => h("figure", {}, h("figcaption", {}, caption), chart,
  note ? h("p", { class: "muted small" }, note) : null);
