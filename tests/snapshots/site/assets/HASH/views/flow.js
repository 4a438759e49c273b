// #/flow : cross-layer links as a picture (modules of adjacent layers linked by their features' edges, Plotly),
// per-pair summaries by kind of edge, a pair selector with its top links, and every edge.
import { h, help, table, featureLink, missing, fill, append } from "../lib/dom.js";
import { load, labelOf } from "../lib/data.js";
import { int, num, pct } from "../lib/format.js";
import { vtable } from "../lib/vtable.js";
import { loadPlotly, themeLayout, plotConfig } from "../lib/plotly.js";

const KIND = { cross_layer_pmi: "co-firing (PMI)", decoder_cosine: "decoder cosine" };
const kindText = (k) => KIND[k] || k.replace(/_/g, " ");

const COLUMNS = [
  { key: "kind", label: "Kind", width: "7rem", minor: true, text: (r) => kindText(r.kind) },
  { key: "from", label: "From", width: "5.6rem", text: (r) => `L${r.la}:F${r.fa}`, sort: (r) => r.la * 1e6 + r.fa },
  { key: "fromLabel", label: "Label", width: "minmax(5rem, 1fr)", minor: true, text: (r) => labelOf(r.lbA), tip: (r) => r.lbA, sort: (r) => r.lbA || null },
  { key: "to", label: "To", width: "5.6rem", text: (r) => `L${r.lb}:F${r.fb}`, sort: (r) => r.lb * 1e6 + r.fb },
  { key: "toLabel", label: "Label", width: "minmax(5rem, 1fr)", text: (r) => labelOf(r.lbB), tip: (r) => r.lbB, sort: (r) => r.lbB || null },
  { key: "w", label: "Weight", width: "4.6rem", num: true, text: (r) => num(r.w), sort: (r) => r.w },
  { key: "p", label: "Null p", width: "4.6rem", num: true, minor: true, text: (r) => num(r.p, 2), sort: (r) => r.p },
];

export async function render(el) {
  const d = await load("flow.json");
  const rows = d.edges.map(([kind, la, fa, lb, fb, w, count, p]) => ({ kind, la, fa, lb, fb, w, count, p,
    lbA: d.labels[`${la}:${fa}`] || "", lbB: d.labels[`${lb}:${fb}`] || "" }));
  append(el, h("h1", {}, "Cross-layer flow"));
  if (!rows.length) return append(el, h("p", { class: "muted" }, "This atlas has no cross-layer edges."));
  const hasNull = rows.some((r) => r.p != null);
  const pairKey = (p) => `${p.kind}|${p.layer_a}|${p.layer_b}`;
  const select = h("select", { id: "pair", "aria-label": "Layer pair" }, d.pairs.map((p) =>
    h("option", { value: pairKey(p) }, `L${p.layer_a} → L${p.layer_b} · ${kindText(p.kind)}`)));
  const top = h("div", {});
  const showPair = () => {
    const [kind, la, lb] = select.value.split("|");
    const list = rows.filter((r) => r.kind === kind && r.la === Number(la) && r.lb === Number(lb)).sort((a, b) => (b.w ?? 0) - (a.w ?? 0)).slice(0, 20);
    fill(top, table({ caption: "Top links of the pair", columns: [{ label: "From" }, { label: "Label" }, { label: "To" }, { label: "Label" }, { label: "Weight", num: true }],
      rows: list.map((r) => [featureLink(r.la, r.fa), labelOf(r.lbA), featureLink(r.lb, r.fb), labelOf(r.lbB), num(r.w)]) }));
  };
  select.addEventListener("change", showPair);
  showPair();
  const picture = h("div", { class: "plot", id: "flow-plot" }, h("p", { class: "muted" }, "Loading the interactive chart…"));
  append(el, 
    hasNull ? null : h("p", { class: "notice" }, "No chance model was recorded for these edges: their weights cannot be compared with what shared gene identity alone would give."),
    h("p", { class: "muted" }, "Two kinds of edge link features of different layers: ", h("b", {}, "co-firing (PMI)"), " ", help("pmi", "PMI"),
      " — the features fire on the same tokens more than chance — and ", h("b", {}, "decoder cosine"), " ", help("decoder_cosine", "decoder cosine"), " — they write similar directions. Their weights are not comparable."),
    h("h2", {}, "Modules linked across layers"), picture,
    h("h2", {}, "Layer pairs"),
    table({ caption: "Per layer pair and kind of edge", columns: [{ label: "Pair" }, { label: "Kind" }, { label: "Edges", num: true },
      { label: "Upstream features", num: true }, { label: "Downstream features", num: true }, { label: "Mean weight", num: true }, { label: "Max weight", num: true }],
    rows: d.pairs.map((p) => [`L${p.layer_a} → L${p.layer_b}`, kindText(p.kind), int(p.edges), int(p.features_a), int(p.features_b), num(p.mean_weight), num(p.max_weight)]) }),
    published(d.pairs),
    h("h2", {}, "Top links of one pair"), h("div", { class: "toolbar" }, h("label", { for: "pair" }, "Pair "), select), top,
    h("h2", {}, `Every edge (${int(rows.length)})`),
    vtable({ columns: COLUMNS, rows, label: "Cross-layer edges", href: (r) => `#/feature/${r.lb}/${r.fb}`, sort: { key: "w", dir: -1 } }).el,
    h("p", { class: "muted" }, "Each row opens the downstream feature; its page links back upstream."));
  // After the view is in the page, so Plotly sees the real width.
  setTimeout(() => drawPicture(picture, d).catch((err) => fill(picture, missing("The interactive chart", err))), 0);
}

function published(pairs) {
  const pub = pairs.filter((p) => Object.keys(p.published || {}).length);
  if (!pub.length) return null;
  return [h("h3", {}, "As published"), table({ caption: "Published pair summaries",
    columns: [{ label: "Pair" }, { label: "Features with edges", num: true }, { label: "Mean max PMI", num: true }, { label: "Upstream coverage", num: true }, { label: "Downstream coverage", num: true }],
    rows: pub.map((p) => [`L${p.layer_a} → L${p.layer_b}`, int(p.published.n_features_with_deps), num(p.published.mean_max_pmi), pct(p.published.upstream_coverage), pct(p.published.downstream_coverage)]) })];
}

// Modules as nodes (x = layer, y = module), links drawn as lines whose width grows with the number of edges.
async function drawPicture(box, d) {
  const links = d.module_links; // [kind, la, ma, lb, mb, count]
  if (!links.length) return fill(box, h("p", { class: "muted" }, "No edge joins two features that both belong to modules."));
  const Plotly = await loadPlotly();
  const kind = links.some((l) => l[0] === "cross_layer_pmi") ? "cross_layer_pmi" : links[0][0];
  const use = links.filter((l) => l[0] === kind);
  const max = Math.max(...use.map((l) => l[5]));
  const classes = [[0, 0.34, 1], [0.34, 0.67, 3], [0.67, 1.01, 6]];
  const traces = classes.map(([lo, hi, w]) => {
    const x = [], y = [], text = [];
    for (const [, la, ma, lb, mb, n] of use) {
      if (n / max < lo || n / max >= hi) continue;
      x.push(la, lb, null); y.push(ma, mb, null);
    }
    return { type: "scatter", mode: "lines", x, y, line: { width: w, color: "rgba(74,127,208,0.55)" }, hoverinfo: "skip", showlegend: false, text };
  });
  const nodes = new Map();
  for (const [, la, ma, lb, mb, n] of use) for (const [l, m] of [[la, ma], [lb, mb]]) nodes.set(`${l}:${m}`, [l, m, (nodes.get(`${l}:${m}`)?.[2] || 0) + n]);
  const nv = [...nodes.values()];
  traces.push({ type: "scatter", mode: "markers", x: nv.map((n) => n[0]), y: nv.map((n) => n[1]), marker: { size: 9, color: "#e0913a" },
    text: nv.map((n) => `Layer ${n[0]}, module ${n[1]}: ${n[2]} edge ends`), hoverinfo: "text", showlegend: false });
  fill(box);
  await Plotly.newPlot(box, traces, themeLayout({ height: 360, xaxis: { title: { text: "Layer" }, dtick: 1 }, yaxis: { title: { text: "Module" } } }), plotConfig);
    box.setAttribute("role", "figure");
    box.setAttribute("aria-label", `Modules of adjacent layers linked by ${kindText(kind)} edges between their features; thicker lines carry more edges.`);
}
