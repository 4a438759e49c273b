// #/flow : cross-layer links as a picture (modules of adjacent layers linked by their features' edges, Plotly),
// per-pair summaries by kind of edge, a pair selector with its top links, and every edge.
import { h, help, table, featureLink, missing, fill, append } from "../lib/dom.js";
import { load, rows, labelOf } from "../lib/data.js";
import { int, num, pct } from "../lib/format.js";
import { vtable } from "../lib/vtable.js";
import { loadPlotly, themeLayout, plotConfig } from "../lib/plotly.js";

const KIND = { cross_layer_pmi: "co-firing (PMI)", decoder_cosine: "decoder cosine" };
const kindText = (k) => KIND[k] || k.replace(/_/g, " ");

const COLUMNS = [
  { key: "kind", label: "Kind", width: "7rem", minor: true, text: (r) => kindText(r.kind) },
  { key: "from", label: "From", width: "5.6rem", text: (r) => `L${r.layer_a}:F${r.feature_a}`, sort: (r) => r.layer_a * 1e6 + r.feature_a },
  { key: "fromLabel", label: "Label", width: "minmax(5rem, 1fr)", minor: true, text: (r) => labelOf(r.label_a), tip: (r) => r.label_a, sort: (r) => r.label_a || null },
  { key: "to", label: "To", width: "5.6rem", text: (r) => `L${r.layer_b}:F${r.feature_b}`, sort: (r) => r.layer_b * 1e6 + r.feature_b },
  { key: "toLabel", label: "Label", width: "minmax(5rem, 1fr)", text: (r) => labelOf(r.label_b), tip: (r) => r.label_b, sort: (r) => r.label_b || null },
  { key: "weight", label: "Weight", width: "4.6rem", num: true, text: (r) => num(r.weight), sort: (r) => r.weight },
  { key: "null_p", label: "Null p", width: "4.6rem", num: true, minor: true, text: (r) => num(r.null_p, 2), sort: (r) => r.null_p },
];

export async function render(el) {
  const d = await load("flow.json");
  const edges = rows(d.edges).map((e) => ({ ...e, label_a: d.labels[`${e.layer_a}:${e.feature_a}`] || "", label_b: d.labels[`${e.layer_b}:${e.feature_b}`] || "" }));
  append(el, h("h1", {}, "Cross-layer flow"));
  if (!edges.length) return append(el, h("p", { class: "muted" }, "This atlas has no cross-layer edges."));
  const hasNull = edges.some((r) => r.null_p != null);
  const pairKey = (p) => `${p.kind}|${p.layer_a}|${p.layer_b}`;
  const select = h("select", { id: "pair", "aria-label": "Layer pair" }, d.pairs.map((p) =>
    h("option", { value: pairKey(p) }, `L${p.layer_a} → L${p.layer_b} · ${kindText(p.kind)}`)));
  const top = h("div", {});
  const showPair = () => {
    const [kind, la, lb] = select.value.split("|");
    const list = edges.filter((r) => r.kind === kind && r.layer_a === Number(la) && r.layer_b === Number(lb)).sort((a, b) => (b.weight ?? 0) - (a.weight ?? 0)).slice(0, 20);
    fill(top, table({ caption: "Top links of the pair", columns: [{ label: "From" }, { label: "Label" }, { label: "To" }, { label: "Label" }, { label: "Weight", num: true }],
      rows: list.map((r) => [featureLink(r.layer_a, r.feature_a), labelOf(r.label_a), featureLink(r.layer_b, r.feature_b), labelOf(r.label_b), num(r.weight)]) }));
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
    h("h2", {}, `Every edge (${int(edges.length)})`),
    vtable({ columns: COLUMNS, rows: edges, label: "Cross-layer edges", href: (r) => `#/feature/${r.layer_b}/${r.feature_b}`, sort: { key: "weight", dir: -1 } }).el,
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
  const links = rows(d.module_links); // [{kind, layer_a, module_a, layer_b, module_b, edges}]
  if (!links.length) return fill(box, h("p", { class: "muted" }, "No edge joins two features that both belong to modules."));
  const Plotly = await loadPlotly();
  const kind = links.some((l) => l.kind === "cross_layer_pmi") ? "cross_layer_pmi" : links[0].kind;
  const use = links.filter((l) => l.kind === kind);
  const max = Math.max(...use.map((l) => l.edges));
  const classes = [[0, 0.34, 1], [0.34, 0.67, 3], [0.67, 1.01, 6]];
  const traces = classes.map(([lo, hi, w]) => {
    const x = [], y = [], text = [];
    for (const l of use) {
      if (l.edges / max < lo || l.edges / max >= hi) continue;
      x.push(l.layer_a, l.layer_b, null); y.push(l.module_a, l.module_b, null);
    }
    return { type: "scatter", mode: "lines", x, y, line: { width: w, color: "rgba(74,127,208,0.55)" }, hoverinfo: "skip", showlegend: false, text };
  });
  const nodes = new Map();
  for (const l of use) {
    for (const [layer, module] of [[l.layer_a, l.module_a], [l.layer_b, l.module_b]]) {
      const k = `${layer}:${module}`;
      nodes.set(k, { layer, module, ends: (nodes.get(k)?.ends || 0) + l.edges });
    }
  }
  const nv = [...nodes.values()];
  traces.push({ type: "scatter", mode: "markers", x: nv.map((n) => n.layer), y: nv.map((n) => n.module), marker: { size: 9, color: "#e0913a" },
    text: nv.map((n) => `Layer ${n.layer}, module ${n.module}: ${n.ends} edge ends`), hoverinfo: "text", showlegend: false });
  fill(box);
  await Plotly.newPlot(box, traces, themeLayout({ height: 360, xaxis: { title: { text: "Layer" }, dtick: 1 }, yaxis: { title: { text: "Module" } } }), plotConfig);
    box.setAttribute("role", "figure");
    box.setAttribute("aria-label", `Modules of adjacent layers linked by ${kindText(kind)} edges between their features; thicker lines carry more edges.`);
}
