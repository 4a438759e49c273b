// Feature map on one canvas: points binned into a grid for hover lookup, one reused tooltip element.
import { h } from "./dom.js";

const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
const GRID = 64;

export function featureMap({ points, label, onPick }) {
  // points: [{x, y (0..4095), color index or null, text, id}]
  const canvas = h("canvas", { role: "img", "aria-label": label, tabindex: "-1" });
  const tip = h("div", { class: "tip", hidden: true });
  const el = h("div", { class: "map-wrap" }, canvas, tip);
  let highlight = null; // Set of ids, or null for all
  let scale = null;
  const grid = new Map();
  for (const p of points) {
    const k = ((p.x * GRID) >> 12) * GRID + ((p.y * GRID) >> 12);
    if (!grid.has(k)) grid.set(k, []);
    grid.get(k).push(p);
  }

  function draw() {
    const r = canvas.getBoundingClientRect();
    if (!r.width) return;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(r.width * dpr);
    canvas.height = Math.round(r.height * dpr);
    const ctx = canvas.getContext("2d");
    ctx.scale(dpr, dpr);
    const pad = 8, w = r.width - 2 * pad, hgt = r.height - 2 * pad;
    scale = { px: (x) => pad + (x / 4095) * w, py: (y) => pad + (1 - y / 4095) * hgt, w, hgt, pad };
    const muted = getComputedStyle(canvas).getPropertyValue("--muted") || "#888";
    // Dim points first, highlighted ones on top.
    for (const pass of [0, 1]) {
      for (const p of points) {
        const on = !highlight || highlight.has(p.id);
        if ((pass === 1) !== on) continue;
        ctx.globalAlpha = on ? 0.85 : 0.12;
        ctx.fillStyle = p.color == null ? muted : PALETTE[p.color % PALETTE.length];
        ctx.fillRect(scale.px(p.x) - 1.5, scale.py(p.y) - 1.5, 3, 3);
      }
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

  canvas.addEventListener("mousemove", (ev) => {
    const hit = nearest(ev);
    tip.hidden = !hit;
    if (hit) {
      tip.textContent = hit.p.text;
      tip.style.transform = `translate(${Math.min(hit.mx + 12, canvas.clientWidth - 200)}px, ${hit.my + 12}px)`;
    }
  });
  canvas.addEventListener("mouseleave", () => (tip.hidden = true));
  canvas.addEventListener("click", (ev) => { const hit = nearest(ev); if (hit) onPick(hit.p); });
  new ResizeObserver(() => draw()).observe(canvas);
  window.addEventListener("themechange", draw);
  return { el, setHighlight(ids) { highlight = ids; draw(); } };
}
