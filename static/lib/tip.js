// One tooltip per chart: any element of the SVG with data-tip shows its text on hover, focus or tap.
import { h } from "./dom.js";

export function tipBox(root, extra = null) {
  const tip = h("div", { class: "tip", hidden: true, role: "status" });
  const wrap = h("div", { class: "chart-wrap" }, root, tip);
  const show = (ev) => {
    const t = ev.target.closest && ev.target.closest("[data-tip]");
    if (!t) { tip.hidden = true; return; }
    const r = wrap.getBoundingClientRect();
    const b = t.getBoundingClientRect();
    const p = ev.type === "focusin" || ev.clientX == null ? { x: b.left + b.width / 2, y: b.top } : { x: ev.clientX, y: ev.clientY };
    tip.textContent = t.dataset.tip;
    tip.hidden = false;
    const x = Math.max(0, Math.min(p.x - r.left + 10, r.width - tip.offsetWidth - 2));
    tip.style.transform = `translate(${x}px, ${Math.max(0, p.y - r.top - tip.offsetHeight - 8)}px)`;
  };
  root.addEventListener("pointermove", show);
  root.addEventListener("pointerdown", show);
  root.addEventListener("focusin", show);
  root.addEventListener("pointerleave", () => (tip.hidden = true));
  root.addEventListener("focusout", () => (tip.hidden = true));
  return h("div", { class: "chart-box" }, wrap, extra);
}
