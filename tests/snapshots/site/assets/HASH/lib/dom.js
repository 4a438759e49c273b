// DOM helpers. Data only ever enters the page as text nodes or attribute values, never as HTML.

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "style") el.style.cssText = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const link = (href, text, props) => h("a", { href, ...props }, text);
// A feature whose layer is unknown (an imported file that did not record it) has no page: its number, as text.
export const featureLink = (layer, feature, text) => (layer == null ? `F${feature} (layer not recorded)`
  : link(`#/feature/${layer}/${feature}`, text ?? `L${layer}:F${feature}`));

// A small "?" link to the glossary entry that explains a statistic.
export const help = (term, what) => h("a", { class: "help", href: `#/glossary/${term}`, title: `What is ${what || term}?`, "aria-label": `What is ${what || term}?` }, "?");

// A table that reflows on phones: each row becomes a stacked card whose cells carry their column name.
// columns: [{label, num, help: [term, what]}]; rows: arrays of cell contents (text or nodes).
export function table({ columns, rows, caption, cls = "" }) {
  return h("div", { class: "table-wrap" }, h("table", { class: `stack ${cls}` },
    caption ? h("caption", { class: "sr-only" }, caption) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : "", scope: "col" }, c.label, c.help ? [" ", help(...c.help)] : null)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((cell, i) =>
      h("td", { class: columns[i].num ? "num" : "", "data-label": columns[i].label }, cell)))))));
}

// A message in place of a part of a page whose data could not be loaded; the rest of the page still works.
export const missing = (what, err) => h("p", { class: "warn", role: "status" }, `${what} is not available: ${err && err.message ? err.message : err}`);

const NS = "http://www.w3.org/2000/svg";
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

// Replace an element's children; null and false are skipped (the DOM's own replaceChildren would print "null").
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}
