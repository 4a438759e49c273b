// Small SVG charts: grouped bars and lines, with legend and axis titles. Plain SVG, no library.
// The drawing width follows the viewport, so labels keep a readable size on a phone.
import { h, svg } from "./dom.js";

const width = () => Math.round(Math.max(300, Math.min(560, (window.innerWidth || 560) - 48)));

function frame({ title, xTitle, yTitle, height, max, format, top, bottom, role = "img" }) {
  const W = width(), H = height, L = 52, B = 40, T = 10;
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role, "aria-label": title },
    svg("title", {}, title),
    svg("line", { class: "axis", x1: L, x2: W, y1: H - B, y2: H - B }),
    svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }),
    svg("text", { x: L - 6, y: T + 8, "text-anchor": "end" }, top ?? format(max)),
    svg("text", { x: L - 6, y: H - B, "text-anchor": "end" }, bottom ?? format(0)),
    svg("text", { class: "axis-title", x: L + (W - L) / 2, y: H - 4, "text-anchor": "middle" }, xTitle),
    svg("text", { class: "axis-title", x: 12, y: T + (H - B - T) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${T + (H - B - T) / 2})` }, yTitle));
  return { root, W, H, L, B, T };
}

function legend(series) {
  return h("ul", { class: "legend" }, series.map((s) => h("li", {},
    h("span", { class: `swatch${s.dash ? " dashed" : ""}`, style: `background:${s.dash ? "transparent" : s.color};border-color:${s.color}` }), s.name)));
}

function ticks(root, labels, x, y) {
  const every = Math.ceil(labels.length / Math.max(4, Math.floor(width() / 28)));
  labels.forEach((lab, i) => i % every === 0 && root.append(svg("text", { x: x(i), y, "text-anchor": "middle" }, lab)));
}

export function barChart({ labels, series, title, xTitle = "Layer", yTitle = "", height = 240, format = String }) {
  const max = Math.max(1, ...series.flatMap((s) => s.values.map((v) => v || 0)));
  const f = frame({ title, xTitle, yTitle, height, max, format });
  const slot = (f.W - f.L - 8) / labels.length;
  const bw = Math.max(1.5, (slot * 0.8) / series.length);
  const y = (v) => f.T + (f.H - f.B - f.T) * (1 - (v || 0) / max);
  labels.forEach((lab, i) => {
    const x0 = f.L + 4 + i * slot + slot * 0.1;
    series.forEach((s, j) => {
      const v = s.values[i] || 0;
      f.root.append(svg("rect", { x: x0 + j * bw, y: y(v), width: Math.max(1, bw - 1), height: f.H - f.B - y(v), fill: s.color },
        svg("title", {}, `${s.name}, ${xTitle.toLowerCase()} ${lab}: ${format(v)}`)));
    });
  });
  ticks(f.root, labels, (i) => f.L + 4 + i * slot + slot / 2, f.H - f.B + 14);
  return h("div", { class: "chart-box" }, f.root, series.length > 1 ? legend(series) : null);
}

export function lineChart({ labels, series, title, xTitle = "Layer", yTitle = "", height = 240, max = 1, format = String }) {
  const f = frame({ title, xTitle, yTitle, height, max, format });
  const x = (i) => f.L + 10 + (i * (f.W - f.L - 20)) / Math.max(1, labels.length - 1);
  const y = (v) => f.T + (f.H - f.B - f.T) * (1 - v / max);
  for (const s of series) {
    const pts = s.values.map((v, i) => (v == null ? null : [x(i), y(v)])).filter(Boolean);
    if (!pts.length) continue;
    f.root.append(svg("polyline", { points: pts.map((p) => p.join(",")).join(" "), fill: "none", stroke: s.color, "stroke-width": 2, "stroke-dasharray": s.dash || null }));
    s.values.forEach((v, i) => v != null && f.root.append(svg("circle", { cx: x(i), cy: y(v), r: 3, fill: s.color },
      svg("title", {}, `${s.name}, ${xTitle.toLowerCase()} ${labels[i]}: ${format(v)}`))));
  }
  ticks(f.root, labels, x, f.H - f.B + 14);
  return h("div", { class: "chart-box" }, f.root, legend(series.filter((s) => s.values.some((v) => v != null))));
}

// Points (x = category index, y = value) for the gene page's layer x rank chart.
export function dotChart({ labels, points, title, xTitle, yTitle, yMax, height = 220, onPick }) {
  const f = frame({ title, xTitle, yTitle, height, max: yMax, format: String, top: "1", bottom: String(yMax), role: "group" });
  const x = (i) => f.L + 10 + (i * (f.W - f.L - 20)) / Math.max(1, labels.length - 1);
  const y = (v) => f.T + (f.H - f.B - f.T) * ((v - 1) / Math.max(1, yMax - 1));
  for (const p of points) {
    const dot = svg("circle", { cx: x(p.x), cy: y(p.y), r: 4, class: "dot", tabindex: "0", role: "link", "aria-label": p.text },
      svg("title", {}, p.text));
    dot.addEventListener("click", () => onPick(p));
    dot.addEventListener("keydown", (ev) => ev.key === "Enter" && onPick(p));
    f.root.append(dot);
  }
  ticks(f.root, labels, x, f.H - f.B + 14);
  return h("div", { class: "chart-box" }, f.root);
}
