// Small SVG charts for per-layer summaries: grouped bars and a line. Plain SVG, no library.
import { svg } from "./dom.js";

export function barChart({ labels, series, title, height = 220, format = String }) {
  const W = 560, H = height, L = 44, B = 28, T = 10;
  const max = Math.max(1, ...series.flatMap((s) => s.values.map((v) => v || 0)));
  const slot = (W - L - 8) / labels.length;
  const bw = Math.max(2, (slot * 0.8) / series.length);
  const y = (v) => T + (H - B - T) * (1 - (v || 0) / max);
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title },
    svg("title", {}, title),
    svg("line", { class: "axis", x1: L, x2: W, y1: H - B, y2: H - B }),
    svg("text", { x: L - 6, y: T + 8, "text-anchor": "end" }, format(max)),
    svg("text", { x: L - 6, y: H - B, "text-anchor": "end" }, "0"));
  labels.forEach((lab, i) => {
    const x0 = L + i * slot + slot * 0.1;
    series.forEach((s, j) => {
      const v = s.values[i] || 0;
      root.append(svg("rect", { x: x0 + j * bw, y: y(v), width: bw - 1, height: H - B - y(v), fill: s.color },
        svg("title", {}, `${s.name}, layer ${lab}: ${format(v)}`)));
    });
    if (labels.length <= 24 || i % 2 === 0) root.append(svg("text", { x: x0 + (bw * series.length) / 2, y: H - B + 14, "text-anchor": "middle" }, lab));
  });
  return root;
}

export function lineChart({ labels, series, title, height = 220, max = 1, format = String }) {
  const W = 560, H = height, L = 44, B = 28, T = 10;
  const x = (i) => L + 8 + (i * (W - L - 16)) / Math.max(1, labels.length - 1);
  const y = (v) => T + (H - B - T) * (1 - v / max);
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title },
    svg("title", {}, title),
    svg("line", { class: "axis", x1: L, x2: W, y1: H - B, y2: H - B }),
    svg("text", { x: L - 6, y: T + 8, "text-anchor": "end" }, format(max)),
    svg("text", { x: L - 6, y: H - B, "text-anchor": "end" }, format(0)));
  for (const s of series) {
    const pts = s.values.map((v, i) => (v == null ? null : [x(i), y(v)])).filter(Boolean);
    if (!pts.length) continue;
    root.append(svg("polyline", { points: pts.map((p) => p.join(",")).join(" "), fill: "none", stroke: s.color, "stroke-width": 2, "stroke-dasharray": s.dash || null }));
    s.values.forEach((v, i) => v != null && root.append(svg("circle", { cx: x(i), cy: y(v), r: 3, fill: s.color },
      svg("title", {}, `${s.name}, layer ${labels[i]}: ${format(v)}`))));
  }
  labels.forEach((lab, i) => (labels.length <= 24 || i % 2 === 0) && root.append(svg("text", { x: x(i), y: H - B + 14, "text-anchor": "middle" }, lab)));
  return root;
}
