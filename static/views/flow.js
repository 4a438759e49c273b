// #/flow : cross-layer edges between features, summarised per layer pair and listed edge by edge.
import { h } from "../lib/dom.js";
import { load, labelOf } from "../lib/data.js";
import { int, num, pct } from "../lib/format.js";
import { vtable } from "../lib/vtable.js";

const COLUMNS = [
  { key: "from", label: "From", width: "6rem", text: (r) => `L${r.la}:F${r.fa}`, sort: (r) => r.la * 1e6 + r.fa },
  { key: "fromLabel", label: "Label", width: "minmax(6rem, 1fr)", text: (r) => labelOf(r.lbA), title: (r) => r.lbA, sort: (r) => r.lbA || null },
  { key: "to", label: "To", width: "6rem", text: (r) => `L${r.lb}:F${r.fb}`, sort: (r) => r.lb * 1e6 + r.fb },
  { key: "toLabel", label: "Label", width: "minmax(6rem, 1fr)", text: (r) => labelOf(r.lbB), title: (r) => r.lbB, sort: (r) => r.lbB || null },
  { key: "w", label: "Weight", width: "5rem", num: true, text: (r) => num(r.w), sort: (r) => r.w },
  { key: "p", label: "Null p", width: "5rem", num: true, text: (r) => num(r.p, 2), sort: (r) => r.p },
];

export async function render(el) {
  const d = await load("flow.json");
  const rows = d.edges.map(([kind, la, fa, lb, fb, w, count, p]) => ({ kind, la, fa, lb, fb, w, count, p,
    lbA: d.labels[`${la}:${fa}`] || "", lbB: d.labels[`${lb}:${fb}`] || "" }));
  el.append(h("h1", {}, "Cross-layer flow"));
  if (!rows.length) return el.append(h("p", { class: "muted" }, "This atlas has no cross-layer edges."));
  const hasNull = rows.some((r) => r.p != null);
  el.append(
    hasNull ? null : h("p", { class: "notice" }, "No null model was recorded for these edges: their weights cannot be compared with what shared gene identity alone would give."),
    h("h2", {}, "Layer pairs"),
    h("div", { class: "scroll-x" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Pair", "Edges", "Features with edges", "Mean max PMI", "Upstream coverage", "Downstream coverage"].map((c, i) => h("th", { class: i ? "num" : "" }, c)))),
      h("tbody", {}, d.pairs.map((p) => h("tr", {}, h("td", {}, `L${p.layer_a} → L${p.layer_b}`),
        h("td", { class: "num" }, int(p.edges_imported ?? p.n_edges)), h("td", { class: "num" }, int(p.n_features_with_deps)),
        h("td", { class: "num" }, num(p.mean_max_pmi)), h("td", { class: "num" }, pct(p.upstream_coverage)),
        h("td", { class: "num" }, pct(p.downstream_coverage))))))),
    h("h2", {}, `Edges (${int(rows.length)})`),
    vtable({ columns: COLUMNS, rows, label: "Cross-layer edges", href: (r) => `#/feature/${r.lb}/${r.fb}`, sort: { key: "w", dir: -1 } }).el,
    h("p", { class: "muted" }, "Each row opens the downstream feature; its page links back upstream."));
}
