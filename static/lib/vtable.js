// A sortable table that keeps only the rows in view in the DOM, so thousands of rows stay smooth.
// On a phone, columns marked `minor` are left out (priority columns), so the rest keep readable widths.
import { h } from "./dom.js";
import { key as sortKey } from "./format.js";

const ROW = 30;

export function vtable({ columns, rows, href, label, height = 480, sort, onHover, onOpen }) {
  const phone = window.matchMedia("(max-width: 600px)").matches;
  // A column empty ("—") on every row says nothing (an imported file lacks it): left out, as in dom.js table().
  const blank = (c) => rows.length && rows.every((r) => { const t = c.text(r); return t == null || t === "" || t === "—"; });
  columns = columns.filter((c) => !(phone && c.minor) && !blank(c));
  let data = rows;
  let state = sort && columns.some((c) => c.key === sort.key) ? sort : null; // {key, dir: 1 | -1}
  // A fixed width never cuts its header: at least the label and the sort arrow.
  const fit = (c) => (!c.width ? "1fr" : c.width.startsWith("minmax") ? c.width : `max(${c.width}, ${c.label.length + 2.5}ch)`);
  const template = columns.map(fit).join(" ");
  const buttons = columns.map((c) =>
    h("button", { type: "button", title: `Sort by ${c.title || c.label}`, class: c.num ? "num" : "", onclick: () => sortBy(c.key) }, c.label));
  const head = h("div", { class: "vt-head", role: "row", style: `grid-template-columns:${template}` },
    buttons.map((b) => h("span", { role: "columnheader" }, b)));
  const spacer = h("div", { role: "presentation" });
  const body = h("div", { class: "vt-body", role: "rowgroup", style: `height:${height}px` }, spacer);
  const el = h("div", { class: "vt", role: "table", "aria-label": label, "aria-rowcount": rows.length }, h("div", { role: "rowgroup" }, head), body);
  let frame = 0;
  body.addEventListener("scroll", () => { if (!frame) frame = requestAnimationFrame(draw); }, { passive: true });

  function draw() {
    frame = 0;
    const first = Math.max(0, Math.floor(body.scrollTop / ROW) - 5);
    const last = Math.min(data.length, first + Math.ceil(height / ROW) + 10);
    const kids = [];
    for (let i = first; i < last; i++) {
      const r = data[i];
      const row = h("a", { class: "vt-row", role: "row", href: href(r), style: `top:${i * ROW}px;grid-template-columns:${template}` },
        columns.map((c) => h("span", { role: "cell", class: c.num ? "num" : "", title: c.tip ? c.tip(r) : null }, c.text(r))));
      if (onHover) { row.addEventListener("pointerenter", () => onHover(r)); row.addEventListener("focus", () => onHover(r)); }
      if (onOpen) row.addEventListener("click", (ev) => {
        if (ev.button || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return; // new tab etc. as usual
        ev.preventDefault();
        onOpen(r, row);
      });
      kids.push(row);
    }
    spacer.style.height = `${data.length * ROW}px`;
    spacer.replaceChildren(...kids);
  }

  function sortBy(k) {
    state = state && state.key === k ? { key: k, dir: -state.dir } : { key: k, dir: columns.find((c) => c.key === k).num ? -1 : 1 };
    apply();
  }

  function apply() {
    if (state) {
      const col = columns.find((c) => c.key === state.key);
      const v = (r) => sortKey(col.sort ? col.sort(r) : col.text(r));
      data = data.slice().sort((a, b) => {
        const x = v(a), y = v(b);
        if (x == null || y == null) return (x == null) - (y == null);
        return (x < y ? -1 : x > y ? 1 : 0) * state.dir;
      });
    }
    buttons.forEach((b, i) => {
      const cell = b.parentElement; // aria-sort belongs on the column header, the arrow on the button
      if (state && columns[i].key === state.key) { cell.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending"); b.dataset.sort = state.dir > 0 ? "asc" : "desc"; }
      else { cell.removeAttribute("aria-sort"); delete b.dataset.sort; }
    });
    body.scrollTop = 0;
    el.setAttribute("aria-rowcount", data.length);
    draw();
  }

  apply();
  return {
    el,
    setRows(next) { data = next; apply(); },
    get size() { return data.length; },
    first() { return data[0]; },
  };
}
