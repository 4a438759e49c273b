// A point map on one canvas (features of a layer, or cells): colour by a category or a number, a legend,
// points binned into a grid for hover lookup, one reused tooltip, and keyboard access (arrows move, Enter picks).
import { h, fill } from "./dom.js";
import { num } from "./format.js";

export const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#86bcb6", "#d37295", "#8cd17d"];
const GRID = 64;

// Sequential scale (light to dark blue-purple), readable in both themes.
export function ramp(t) {
  const a = [0.93, 0.9, 0.98], b = [0.27, 0.0, 0.55];
  const c = a.map((v, i) => Math.round(255 * (v + (b[i] - v) * Math.max(0, Math.min(1, t)))));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// points: [{id, x, y (0..max), text}]; colour(p) -> {cat: index|null} or {value: 0..1|null}
export function pointMap({ points, label, max = 4095, onPick, size = 3 }) {
  const canvas = h("canvas", { role: "img", "aria-label": label, tabindex: "0" });
  const tip = h("div", { class: "tip", hidden: true });
  const legendEl = h("div", { class: "map-legend", "aria-live": "polite" });
  const status = h("p", { class: "sr-only", "aria-live": "polite" });
  const el = h("div", { class: "map-box" }, h("div", { class: "map-wrap" }, canvas, tip), legendEl, status);
  let highlight = null, colour = () => ({}), scale = null, cursor = -1;
  const grid = new Map();
  points.forEach((p, i) => {
    p.i = i;
    const k = ((p.x * GRID / (max + 1)) | 0) * GRID + ((p.y * GRID / (max + 1)) | 0);
    if (!grid.has(k)) grid.set(k, []);
    grid.get(k).push(p);
  });
  const order = points.slice().sort((a, b) => a.x - b.x || a.y - b.y); // keyboard walks left to right

  function draw() {
    const r = canvas.getBoundingClientRect();
    if (!r.width) return;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(r.width * dpr);
    canvas.height = Math.round(r.height * dpr);
    const ctx = canvas.getContext("2d");
    ctx.scale(dpr, dpr);
    const pad = 8, w = r.width - 2 * pad, hgt = r.height - 2 * pad;
    scale = { px: (x) => pad + (x / max) * w, py: (y) => pad + (1 - y / max) * hgt, w, hgt, pad };
    const muted = getComputedStyle(canvas).getPropertyValue("--muted").trim() || "#888";
    for (const pass of [0, 1, 2]) {
      for (const p of points) {
        const on = !highlight || highlight.has(p.id);
        const c = colour(p);
        const coloured = c.cat != null || c.value != null;
        // Dimmed points first, then uncoloured, then coloured on top.
        if (pass !== (on ? (coloured ? 2 : 1) : 0)) continue;
        ctx.globalAlpha = on ? 0.9 : 0.12;
        ctx.fillStyle = c.cat != null ? PALETTE[c.cat % PALETTE.length] : c.value != null ? ramp(c.value) : muted;
        ctx.fillRect(scale.px(p.x) - size / 2, scale.py(p.y) - size / 2, size, size);
      }
    }
    const cur = order[cursor];
    if (cur) {
      ctx.globalAlpha = 1;
      ctx.strokeStyle = getComputedStyle(canvas).getPropertyValue("--fg").trim() || "#000";
      ctx.lineWidth = 2;
      ctx.strokeRect(scale.px(cur.x) - 5, scale.py(cur.y) - 5, 10, 10);
    }
  }

  function nearest(ev) {
    if (!scale) return null;
    const r = canvas.getBoundingClientRect();
    const mx = ev.clientX - r.left, my = ev.clientY - r.top;
    const gx = Math.floor(((mx - scale.pad) / scale.w) * GRID), gy = Math.floor((1 - (my - scale.pad) / scale.hgt) * GRID);
    let best = null, bd = 64;
    for (let i = gx - 1; i <= gx + 1; i++) for (let j = gy - 1; j <= gy + 1; j++) {
      for (const p of grid.get(i * GRID + j) || []) {
        if (highlight && !highlight.has(p.id)) continue;
        const d = (scale.px(p.x) - mx) ** 2 + (scale.py(p.y) - my) ** 2;
        if (d < bd) { bd = d; best = p; }
      }
    }
    return best ? { p: best, mx, my } : null;
  }

  function showTip(p, mx, my) {
    tip.hidden = false;
    tip.textContent = p.text;
    tip.style.transform = `translate(${Math.max(0, Math.min(mx + 12, canvas.clientWidth - 200))}px, ${my + 12}px)`;
  }

  canvas.addEventListener("mousemove", (ev) => {
    const hit = nearest(ev);
    tip.hidden = !hit;
    if (hit) showTip(hit.p, hit.mx, hit.my);
  });
  canvas.addEventListener("mouseleave", () => (tip.hidden = true));
  canvas.addEventListener("click", (ev) => { const hit = nearest(ev); if (hit && onPick) onPick(hit.p); });
  canvas.addEventListener("keydown", (ev) => {
    const visible = order.filter((p) => !highlight || highlight.has(p.id));
    if (!visible.length) return;
    const at = visible.indexOf(order[cursor]);
    const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1, PageDown: 25, PageUp: -25 }[ev.key];
    if (step) {
      ev.preventDefault();
      const next = visible[Math.max(0, Math.min(visible.length - 1, (at < 0 ? 0 : at + step)))];
      cursor = order.indexOf(next);
      draw();
      status.textContent = next.text;
      if (scale) showTip(next, scale.px(next.x), scale.py(next.y));
    } else if (ev.key === "Enter" && at >= 0 && onPick) {
      onPick(order[cursor]);
    } else if (ev.key === "Escape") {
      cursor = -1; tip.hidden = true; draw();
    }
  });
  canvas.addEventListener("blur", () => (tip.hidden = true));
  new ResizeObserver(() => draw()).observe(canvas);
  window.addEventListener("themechange", draw);

  return {
    el,
    setHighlight(ids) { highlight = ids; draw(); },
    // legend: {kind: "cat", items: [[index, text]]} or {kind: "num", lo, hi, title}
    setColour(fn, legend) { colour = fn; renderLegend(legend); draw(); },
  };

  function renderLegend(lg) {
    if (!lg) return fill(legendEl);
    if (lg.kind === "cat") {
      fill(legendEl, h("span", { class: "muted" }, `${lg.title}: `), h("ul", { class: "legend" },
        lg.items.map(([i, text]) => h("li", {}, h("span", { class: "swatch", style: `background:${i == null ? "var(--muted)" : PALETTE[i % PALETTE.length]}` }), text))));
    } else {
      fill(legendEl, h("span", { class: "muted" }, `${lg.title}: `),
        h("span", {}, lg.lo == null ? "" : num(lg.lo)), h("span", { class: "ramp", "aria-hidden": "true" }), h("span", {}, lg.hi == null ? "" : num(lg.hi)),
        lg.none ? h("span", { class: "muted" }, ` · grey: ${lg.none}`) : null);
    }
  }
}
