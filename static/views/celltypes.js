// #/celltypes and #/celltypes/NAME : the features that mark a cell type, across layers, strongest effect first.
import { h, help, table, link, append } from "../lib/dom.js";
import { boot, load, labelOf } from "../lib/data.js";
import { int, num, pval, plural } from "../lib/format.js";
import { vtable } from "../lib/vtable.js";
import { barChart } from "../lib/chart.js";

const COLUMNS = [
  { key: "layer", label: "Layer", width: "3.6rem", num: true, text: (r) => r.layer },
  { key: "f", label: "Feature", width: "4.6rem", num: true, text: (r) => `F${r.f}`, sort: (r) => r.f },
  { key: "auc", label: "AUC", width: "4rem", num: true, text: (r) => num(r.auc), sort: (r) => r.auc },
  { key: "or", label: "Odds ratio", width: "5rem", num: true, text: (r) => num(r.or), sort: (r) => r.or },
  { key: "q", label: "q", width: "5rem", num: true, minor: true, text: (r) => pval(r.q), sort: (r) => r.q },
  { key: "label", label: "Label", width: "minmax(6rem, 1fr)", text: (r) => labelOf(r.label), tip: (r) => r.label, sort: (r) => r.label || null },
];

export async function render(el, name) {
  append(el, h("h1", {}, name ? name : "Cell types"));
  if (!boot.celltypes.length) return append(el, h("p", { class: "muted" }, "This atlas records no cell-type enrichment."));
  if (!name) {
    const index = await load("celltypes/index.json"); // [[name, features, layers]]
    append(el, h("p", { class: "muted" }, "Features enriched in each cell type of the dataset (their most active cells are of that type more often than chance). Pick a cell type to see its marker features, strongest first."),
      table({ caption: "Cell types", columns: [{ label: "Cell type" }, { label: "Marker features", num: true }, { label: "Layers", num: true }],
        rows: index.map(([n, k, l]) => [link(`#/celltypes/${encodeURIComponent(n)}`, n), int(k), int(l)]) }));
    return;
  }
  const names = boot.celltypes; // in shard order
  const at = names.includes(name) ? names.indexOf(name) : names.findIndex((n) => n.toLowerCase() === name.toLowerCase());
  if (at < 0) return append(el, h("p", { class: "warn" }, `No feature marks a cell type called “${name}”.`), h("p", {}, link("#/celltypes", "All cell types")));
  const d = await load(`celltypes/p/${at}.json`);
  const rows = d.rows.map(([layer, f, auc, or, q, nf, nc, nt, lb]) => ({ layer, f, auc, or, q, label: d.labels[lb] }));
  const hasAuc = rows.some((r) => r.auc != null);
  const per = new Map(d.per_layer);
  append(el, 
    h("p", { class: "summary" }, `${plural(d.n, "feature")} mark ${d.name} across ${plural(d.per_layer.length, "layer")}`,
      d.n > rows.length ? `; the ${int(rows.length)} with the strongest effect are listed.` : ".", " ", help(hasAuc ? "auc" : "odds_ratio", hasAuc ? "AUC" : "an odds ratio")),
    h("figure", {}, h("figcaption", {}, `Marker features of ${d.name} per layer`),
      barChart({ title: `Marker features of ${d.name} per layer`, labels: boot.layers.map((l) => String(l.layer)), format: int, yTitle: "Features",
        series: [{ name: "features", color: "var(--bar)", values: boot.layers.map((l) => per.get(l.layer) || 0) }] })),
    vtable({ columns: hasAuc ? COLUMNS : COLUMNS.filter((c) => c.key !== "auc"), rows, label: `Features that mark ${d.name}`,
      height: Math.min(480, 30 * rows.length + 4), href: (r) => `#/feature/${r.layer}/${r.f}`, sort: null }).el,
    h("p", {}, link("#/celltypes", "All cell types")));
}
