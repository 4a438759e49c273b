// #/layer/L : feature map (colour by any column, legend, keyboard) and a sortable, filterable table of every
// feature of one layer; a row or point opens a preview in a side panel, whose shard is prefetched on hover.
import { h, link, featureLink, help, missing, fill, append, phone } from "../lib/dom.js";
import { boot, load, rows, layerIds, labelOf, loadFeature, featurePath, prefetch } from "../lib/data.js";
import { int, num, pct, pval } from "../lib/format.js";
import { vtable } from "../lib/vtable.js";
import { pointMap } from "../lib/map.js";
import { dbName } from "../lib/names.js";

const COLUMNS = [
  { key: "f", label: "Feature", width: "4.5rem", num: true, text: (r) => `F${r.feature}`, sort: (r) => r.feature },
  // On a phone the top-genes column is left out: an unlabelled feature is named by its top genes here instead.
  { key: "label", label: "Name", title: "label (on a phone: else top genes)", width: "minmax(7rem, 2fr)", text: (r) => (r.label || !phone() || !r.genes.length ? labelOf(r.label) : `genes ${r.genes.slice(0, 3).join(" ")}`), tip: (r) => r.label || r.genes.join(" "), sort: (r) => r.label || null },
  { key: "genes", label: "Top genes", width: "minmax(6rem, 1.4fr)", minor: true, text: (r) => r.genes.join(" "), sort: (r) => r.genes[0] || null },
  { key: "freq", label: "Freq.", title: "activation frequency", width: "4.6rem", num: true, text: (r) => pct(r.frequency), sort: (r) => r.frequency },
  { key: "ne", label: "Enr.", title: "number of enrichments", width: "3.2rem", num: true, minor: true, text: (r) => int(r.n_enrichments), sort: (r) => r.n_enrichments },
  { key: "mod", label: "Mod.", title: "module", width: "3.2rem", num: true, minor: true, text: (r) => (r.module == null ? "—" : r.module), sort: (r) => r.module },
];

// Colour-by choices: a category index or a 0..1 value per row, and the legend that goes with it.
function colourings(feats, hasSvd) {
  const dbs = [...new Set(feats.map((r) => r.database).filter(Boolean))].sort();
  const mods = [...new Set(feats.map((r) => r.module).filter((m) => m != null))].sort((a, b) => a - b);
  const numeric = (title, get, log) => {
    const vals = feats.map(get).filter((v) => typeof v === "number" && v > 0);
    const lo = Math.min(...vals), hi = Math.max(...vals);
    const t = (v) => (typeof v !== "number" || v <= 0 ? null : log ? Math.log(v / lo) / (Math.log(hi / lo) || 1) : (v - lo) / ((hi - lo) || 1));
    return { fn: (p) => ({ value: t(get(p.row)) }), legend: { kind: "num", title, lo: vals.length ? lo : null, hi: vals.length ? hi : null, none: "zero or none" } };
  };
  const out = {
    module: { fn: (p) => ({ cat: p.row.module == null ? null : mods.indexOf(p.row.module) }),
      legend: { kind: "cat", title: "Module", items: [...mods.slice(0, 12).map((m, i) => [i, `Module ${m}`]), ...(mods.length > 12 ? [[null, `… ${mods.length - 12} more`]] : []), [null, "no module"]] } },
    frequency: numeric("Activation frequency (log scale)", (r) => r.frequency, true),
    database: { fn: (p) => ({ cat: p.row.database ? dbs.indexOf(p.row.database) : null }),
      legend: { kind: "cat", title: "Label database", items: [...dbs.map((db, i) => [i, dbName(db)]), [null, "unlabelled"]] } },
    enrichments: numeric("Enrichments", (r) => r.n_enrichments, false),
    mean_activation: numeric("Mean activation (log scale)", (r) => r.mean_activation, true),
  };
  if (hasSvd) out.svd = { fn: (p) => ({ cat: p.row.svd == null ? null : p.row.svd ? 1 : 0 }), legend: { kind: "cat", title: "SVD-aligned", items: [[0, "no"], [1, "yes"], [null, "not measured"]] } };
  return out;
}

export async function render(el, layerParam) {
  const layer = Number(layerParam);
  if (!layerIds().includes(layer)) throw new Error(`This atlas has no layer ${layer}. Its layers are ${layerIds().join(", ")}.`);
  const d = await load(`layer/${layer}.json`);
  const feats = rows(d.features);
  const byGene = new Map();
  feats.forEach((r) => r.genes.forEach((g) => {
    const k = g.toUpperCase();
    if (!byGene.has(k)) byGene.set(k, []);
    byGene.get(k).push(r);
  }));
  const input = h("input", { type: "search", id: "layer-filter", placeholder: "Gene (e.g. CD74) or label", "aria-label": "Filter features by top gene or label", autocomplete: "off" });
  const annotated = h("input", { type: "checkbox", id: "only-annotated" });
  const alive = h("input", { type: "checkbox", id: "only-alive", checked: true });
  const count = h("p", { class: "count muted", "aria-live": "polite" });
  const panel = h("aside", { class: "preview", "aria-label": "Feature preview", "aria-live": "polite" },
    h("p", { class: "muted" }, "Pick a row or a point to preview its feature here."));
  const open = (r) => preview(panel, layer, r.feature);
  const table = vtable({ columns: COLUMNS, rows: feats, label: `Features of layer ${layer}`, href: (r) => `#/feature/${layer}/${r.feature}`,
    sort: { key: "f", dir: 1 }, onHover: (r) => prefetch(featurePath(layer, r.feature)), onOpen: open });
  const withXY = feats.filter((r) => r.x != null && r.alive);
  const map = boot.has_map && withXY.length ? pointMap({
    label: `Map of the alive features of layer ${layer}; focus it and use the arrow keys to move between features, Enter to preview`,
    points: withXY.map((r) => ({ id: r.feature, row: r, x: r.x, y: r.y, text: `F${r.feature} · ${labelOf(r.label)} · ${r.genes.slice(0, 3).join(" ")}` })),
    onPick: (p) => open(p.row),
  }) : null;
  const choices = colourings(feats, feats.some((r) => r.svd != null));
  const select = h("select", { id: "colour-by", "aria-label": "Colour the map by" }, Object.keys(choices).map((k) =>
    h("option", { value: k }, { module: "module", frequency: "activation frequency", database: "label database", enrichments: "number of enrichments", mean_activation: "mean activation", svd: "SVD alignment" }[k])));
  const recolour = () => map && map.setColour(choices[select.value].fn, choices[select.value].legend);
  select.addEventListener("change", recolour);
  recolour();

  function apply() {
    const q = input.value.trim().toUpperCase();
    let list = q ? (byGene.get(q) || []).concat(feats.filter((r) => !r.genes.some((g) => g.toUpperCase() === q) && (r.label || "").toUpperCase().includes(q))) : feats;
    const base = alive.checked ? feats.filter((r) => r.alive).length : feats.length;
    if (alive.checked) list = list.filter((r) => r.alive);
    if (annotated.checked) list = list.filter((r) => r.n_enrichments > 0);
    table.setRows(list);
    const what = alive.checked ? "alive features" : "features";
    count.textContent = `${int(list.length)} of ${int(base)} ${what}${q ? ` match “${input.value.trim()}”` : annotated.checked ? " (annotated)" : ""}`;
    if (map) map.setHighlight(list.length === base && !q ? null : new Set(list.map((r) => r.feature)));
  }
  let timer = 0;
  input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(apply, 80); });
  annotated.addEventListener("change", apply);
  alive.addEventListener("change", apply);
  apply();

  const info = boot.layers.find((l) => l.layer === layer);
  append(el, 
    h("h1", {}, `Layer ${layer}`),
    h("nav", { class: "pills", "aria-label": "Layers" }, layerIds().map((l) =>
      link(`#/layer/${l}`, String(l), l === layer ? { "aria-current": "page" } : {}))),
    h("p", { class: "muted" }, `${int(info.n_features)} features, ${int(info.alive)} alive, `, annotationText(info), `, ${int(info.n_modules)} modules.`),
    h("div", { class: "layer-grid" },
      map ? h("section", { "aria-label": "Feature map" },
        h("div", { class: "toolbar" }, h("label", { for: "colour-by" }, "Colour by "), select),
        map.el, h("p", { class: "muted small" }, "Positions: ", boot.model && boot.model.family === "synthetic" ? "synthetic." : "the atlas' 2-D map of the features (see About). Click a point or press Enter on it to preview."))
        : h("p", { class: "muted" }, "This atlas has no feature map for this layer."),
      h("section", { "aria-label": "Feature table" },
        h("div", { class: "toolbar" }, input, h("label", { class: "check" }, alive, "alive only"), h("label", { class: "check" }, annotated, "annotated only")),
        count, table.el, panel)),
  );
}

// A layer's annotation in words: its rate with the interval, or, where its enrichment file was not published, that.
export function annotationText(l) {
  if (l.annotations_absent) {
    return h("span", { class: "absent" }, `annotation not published for this layer${l.published_annotated != null ? ` (the publication counts ${int(l.published_annotated)} annotated)` : ""}`);
  }
  if (l.annotated_rate == null) return `${int(l.annotated)} annotated`;
  return [`${int(l.annotated)} of ${int(l.tested)} tested annotated (${pct(l.annotated_rate)}, 95% interval ${pct(l.annotated_rate_lo)} to ${pct(l.annotated_rate_hi)}) `, help("annotated_rate", "the annotation rate")];
}

async function preview(panel, layer, f) {
  // On a phone the panel sits below the table: bring it into view when a row is picked.
  const reveal = () => { if (panel.getBoundingClientRect().top > window.innerHeight - 80) panel.scrollIntoView({ block: "start", behavior: "smooth" }); };
  reveal();
  fill(panel, h("h2", { class: "panel-title" }, `L${layer}:F${f}`), h("p", { class: "muted" }, "Loading…"));
  let d;
  try {
    d = await loadFeature(layer, f);
  } catch (err) {
    return fill(panel, h("h2", { class: "panel-title" }, `L${layer}:F${f}`), missing("The preview", err));
  }
  const absent = boot.layers.find((l) => l.layer === layer).annotations_absent;
  fill(panel,
    h("h2", { class: "panel-title" }, `L${layer}:F${f}`, d.label || d.genes.length ? h("span", { class: "fname" }, ` · ${d.label ? labelOf(d.label) : d.genes.slice(0, 3).map((g) => g.gene).join(" ")}`) : null),
    h("p", {}, d.label ? [labelOf(d.label), h("span", { class: "muted" }, ` · ${dbName(d.database)}${d.q != null ? ` · q = ${pval(d.q)}` : ""}`)] : h("span", { class: "muted" }, absent ? "no published label" : "unlabelled")),
    h("p", { class: "muted" }, `${pct(d.frequency)} of tokens `, help("frequency", "activation frequency"), ` · mean activation ${num(d.mean_activation)} · `,
      absent ? h("span", { class: "absent" }, "enrichments not published for this layer") : `${int(d.enrichments.filter((r) => !r.note).length)} enrichments`),
    d.genes.length ? h("p", {}, h("b", {}, "Top genes: "), d.genes.slice(0, 10).map((g) => g.gene).join(" ")) : null,
    d.enrichments.some((r) => !r.note) ? h("ul", { class: "compact" }, d.enrichments.filter((r) => !r.note).sort((a, b) => (a.q ?? 1) - (b.q ?? 1)).slice(0, 3)
      .map((r) => h("li", {}, labelOf(r.term), h("span", { class: "muted" }, ` (${dbName(r.database)})`)))) : null,
    h("p", {}, featureLink(layer, f, "Open the feature page →")));
  reveal();
}
