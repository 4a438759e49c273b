// #/modules and #/modules/L : co-activation modules, as a sortable table (by size, layer or label); a row opens the
// module below the table: its top terms (placeholders left out) and its members, named.
import { h, link, featureLink, help, fill, append } from "../lib/dom.js";
import { boot, load, rows, labelOf } from "../lib/data.js";
import { int, plural } from "../lib/format.js";
import { vtable } from "../lib/vtable.js";

const SHOWN = 12; // members named in modules.json (builder/site/shards.py NAMED_MEMBERS); the rest as ids on demand

const COLUMNS = [
  { key: "module", label: "Module", width: "5rem", text: (m) => `L${m.layer} · ${m.module}`, sort: (m) => m.layer * 1e6 + m.module },
  { key: "size", label: "Features", width: "5rem", num: true, text: (m) => int(m.n_features), sort: (m) => m.n_features },
  { key: "label", label: "Label", width: "minmax(8rem, 2fr)", text: (m) => labelOf(m.label), tip: (m) => m.label, sort: (m) => m.label || null },
  { key: "terms", label: "Top terms", width: "minmax(8rem, 2fr)", minor: true, text: (m) => terms(m).map((t) => t.term).join("; ") || "—", sort: (m) => terms(m)[0]?.term || null },
];
const terms = (m) => rows(m.top_terms).filter((t) => !t.placeholder);

export async function render(el, layerParam) {
  const mods = rows(await load("modules.json")); // [{layer, module, n_features, label, top_terms, members, member_names}]
  const layers = [...new Set(mods.map((m) => m.layer))];
  const layer = layerParam != null ? Number(layerParam) : null;
  if (layer != null && !boot.layers.some((l) => l.layer === layer)) throw new Error(`This atlas has no layer ${layer}.`);
  const list = layer == null ? mods : mods.filter((m) => m.layer === layer);
  const nullMods = rows(boot.nulls).some((r) => r.analysis === "modules");
  const panel = h("section", { class: "preview", "aria-live": "polite", "aria-label": "Module" }, h("p", { class: "muted" }, "Pick a module in the table to see its terms and members here."));
  const open = (m) => { fill(panel, card(m)); if (panel.getBoundingClientRect().top > window.innerHeight - 80) panel.scrollIntoView({ block: "start", behavior: "smooth" }); };
  append(el,
    h("h1", {}, layer == null ? "Modules" : `Modules of layer ${layer}`),
    h("p", { class: "muted" }, `${plural(mods.length, "co-activation module")} in ${plural(layers.length, "layer")} `, help("module", "a module"), ". ",
      nullMods ? ["Their counts beside shuffled codes are on the ", link("#/", "overview"), "."] : "No shuffled-code baseline was recorded for these modules.",
      " Sort by a column header; a row opens its module."),
    h("nav", { class: "pills", "aria-label": "Layers" }, link("#/modules", "all", layer == null ? { "aria-current": "page" } : {}),
      layers.map((l) => link(`#/modules/${l}`, String(l), l === layer ? { "aria-current": "page" } : {}))),
    list.length ? [vtable({ columns: COLUMNS, rows: list, label: "Modules", height: Math.min(420, 30 * list.length + 4), sort: { key: "size", dir: -1 },
      href: (m) => `#/modules/${m.layer}`, onOpen: open }).el, panel] : h("p", { class: "muted" }, "No module in this layer."));
  if (list.length) open(list.slice().sort((a, b) => b.n_features - a.n_features)[0]);
}

function card(m) {
  const top = rows(m.top_terms), real = top.filter((t) => !t.placeholder), hidden = top.length - real.length;
  const names = m.member_names || [];
  const box = h("div", { class: "members" });
  const showAll = () => fill(box, h("p", { class: "muted small" }, `All ${int(m.members.length)} members (ids; a link opens the feature):`),
    h("div", { class: "member-ids" }, m.members.map((f) => featureLink(m.layer, f, `F${f}`))));
  fill(box, h("ul", { class: "compact" }, m.members.slice(0, SHOWN).map((f, i) => h("li", {}, featureLink(m.layer, f, null, names[i] ? labelOf(names[i]) : null)))),
    m.members.length > SHOWN ? h("button", { type: "button", onclick: showAll }, `Show all ${int(m.members.length)} members`) : null);
  return [h("h2", {}, `Module ${m.module} of layer ${m.layer}`, h("span", { class: "fname" }, ` · ${labelOf(m.label)}`)),
    h("p", { class: "muted" }, `${plural(m.n_features, "feature")}. `, link(`#/layer/${m.layer}`, `Layer ${m.layer} explorer`), " (colour its map by module)."),
    real.length ? [h("h3", {}, "Top terms"), h("ol", {}, real.map((t) => h("li", {}, t.term, h("span", { class: "muted" }, ` (${int(t.count)} members)`))))] : null,
    hidden ? h("p", { class: "muted small" }, `${plural(hidden, "placeholder term")} of the published file (a TF-list test or an edge count, not a gene set) left out.`) : null,
    h("h3", {}, "Members"), box];
}
