// #/celltypes and #/celltypes/NAME : the features that mark a cell type, across layers, strongest effect first.
import { h, help, table, link, append } from "../lib/dom.js";
import { boot, load, rows, labelOf } from "../lib/data.js";
import { int, num, pval, plural } from "../lib/format.js";
import { vtable } from "../lib/vtable.js";
import { barChart, figure } from "../lib/chart.js";

const COLUMNS = [
  { key: "layer", label: "Layer", width: "3.6rem", num: true, text: (r) => r.layer },
  { key: "feature", label: "Feature", width: "4.6rem", num: true, text: (r) => `F${r.feature}`, sort: (r) => r.feature },
  { key: "auc", label: "AUC", width: "4rem", num: true, text: (r) => num(r.auc), sort: (r) => r.auc },
  { key: "odds_ratio", label: "Odds ratio", width: "5rem", num: true, text: (r) => num(r.odds_ratio), sort: (r) => r.odds_ratio },
  { key: "q", label: "q", width: "5rem", num: true, minor: true, text: (r) => pval(r.q), sort: (r) => r.q },
  { key: "label", label: "Label", width: "minmax(6rem, 1fr)", text: (r) => labelOf(r.label), tip: (r) => r.label, sort: (r) => r.label || null },
];

export async function render(el, name) {
  append(el, h("h1", {}, name ? name : "Cell types"));
  if (!boot.celltypes.length) return append(el, h("p", { class: "muted" }, "This atlas records no cell-type enrichment."));
  if (!name) {
    const index = rows(await load("celltypes/index.json")); // [{name, n_features, n_layers}]
    append(el, h("p", { class: "muted" }, "Features enriched in each cell type of the dataset (their most active cells are of that type more often than chance). Pick a cell type to see its marker features, strongest first."),
      table({ caption: "Cell types", columns: [{ label: "Cell type" }, { label: "Marker features", num: true }, { label: "Layers", num: true }],
        rows: index.map((c) => [link(`#/celltypes/${encodeURIComponent(c.name)}`, c.name), int(c.n_features), int(c.n_layers)]) }));
    return;
  }
  const names = boot.celltypes; // in shard order
  const at = names.includes(name) ? names.indexOf(name) : names.findIndex((n) => n.toLowerCase() === name.toLowerCase());
  if (at < 0) return append(el, h("p", { class: "warn" }, `No feature marks a cell type called “${name}”.`), h("p", {}, link("#/celltypes", "All cell types")));
  const d = await load(`celltypes/p/${at}.json`);
  const markers = rows(d.features).map((r) => ({ ...r, label: d.labels[r.label] }));
  const hasAuc = markers.some((r) => r.auc != null);
  const perLayer = rows(d.per_layer), per = new Map(perLayer.map((p) => [p.layer, p.n_features]));
  append(el, 
    h("p", { class: "summary" }, `${plural(d.n_features, "feature")} mark ${d.name} across ${plural(perLayer.length, "layer")}`,
      d.n_features > markers.length ? `; the ${int(markers.length)} with the strongest effect are listed.` : ".", " ", help(hasAuc ? "auc" : "odds_ratio", hasAuc ? "AUC" : "an odds ratio")),
    figure(`Marker features of ${d.name} per layer`,
      barChart({ title: `Marker features of ${d.name} per layer`, labels: boot.layers.map((l) => String(l.layer)), format: int, integer: true, yTitle: "Features",
        series: [{ name: "features", color: "var(--bar)", values: boot.layers.map((l) => per.get(l.layer) || 0) }] })),
    vtable({ columns: hasAuc ? COLUMNS : COLUMNS.filter((c) => c.key !== "auc"), rows: markers, label: `Features that mark ${d.name}`,
      height: Math.min(480, 30 * markers.length + 4), href: (r) => `#/feature/${r.layer}/${r.feature}`, sort: null }).el,
    h("p", {}, link("#/celltypes", "All cell types")));
}
