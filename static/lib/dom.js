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
// A feature's link, with its name beside the id when given (its label, or its top genes). A feature whose layer is
// unknown (an imported file that did not record it) has no page: its number and name, as text.
export function featureLink(layer, feature, text, name) {
  const id = layer == null ? `F${feature} (layer not recorded)` : link(`#/feature/${layer}/${feature}`, text ?? `L${layer}:F${feature}`);
  return name ? h("span", { class: "feat" }, id, h("span", { class: "fname" }, ` ${name}`)) : id;
}

// A small "?" link to the glossary entry that explains a statistic.
export const help = (term, what) => h("a", { class: "help", href: `#/glossary/${term}`, title: `What is ${what || term}?`, "aria-label": `What is ${what || term}?` }, "?");

// A table that reflows on phones: each row becomes a stacked card whose cells carry their column name; with
// `scroll`, a wide table (one column per layer) keeps its rows and scrolls sideways inside its box instead.
// columns: [{label, num, help: [term, what]}]; rows: arrays of cell contents (text or nodes). A column that is
// empty ("—") on every row is left out: the page says once what the data lacks instead of a column of dashes.
const empty = (c) => c == null || c === "" || c === "—" || (c instanceof Node && c.textContent.trim() === "—");
export function table({ columns, rows, caption, cls = "", scroll = false }) {
  const keep = columns.map((c, i) => i === 0 || c.keep || !rows.length || rows.some((r) => !empty(r[i])));
  const cols = columns.filter((_, i) => keep[i]);
  return h("div", { class: `table-wrap${scroll ? " scroll" : ""}`, tabindex: scroll ? "0" : null, role: scroll ? "region" : null, "aria-label": scroll ? caption : null },
    h("table", { class: `${scroll ? "wide" : "stack"} ${cls}` },
      caption ? h("caption", { class: "sr-only" }, caption) : null,
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", { class: c.num ? "num" : "", scope: "col" }, c.label, c.help ? [" ", help(...c.help)] : null)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.filter((_, i) => keep[i]).map((cell, i) =>
        h("td", { class: cols[i].num ? "num" : "", "data-label": cols[i].label }, cell)))))));
}

export const phone = () => window.matchMedia("(max-width: 600px)").matches;

// A section that folds: open on a wide screen, folded on a phone (unless `open`), its summary line saying what is
// inside, so a phone page stays a few screens long.
export function fold({ title, summary, body, open, id, level = "h2" }) {
  return h("details", { class: "fold", open: open ?? !phone(), id: id || null },
    h("summary", {}, h(level, {}, title), summary ? h("span", { class: "muted small" }, summary) : null), body);
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
