// #/flow : cross-layer links. A picture (SVG) of the modules of linked layers joined by their features' edges,
// per-pair summaries by kind of edge, a pair selector with its top links, and every edge.
import { h, svg, help, table, featureLink, fill, fold, append } from "../lib/dom.js";
import { load, rows, labelOf } from "../lib/data.js";
import { int, num, pct } from "../lib/format.js";
import { vtable } from "../lib/vtable.js";
import { chartWidth, figure, niceTicks } from "../lib/chart.js";
import { tipBox } from "../lib/tip.js";
import { kindName } from "../lib/names.js";

const kindText = kindName;

const COLUMNS = [
  { key: "kind", label: "Kind", width: "minmax(7rem, 1.2fr)", minor: true, text: (r) => kindText(r.kind) },
  { key: "from", label: "From", width: "5.6rem", text: (r) => `L${r.layer_a}:F${r.feature_a}`, sort: (r) => r.layer_a * 1e6 + r.feature_a },
  { key: "fromLabel", label: "Name", width: "minmax(5rem, 1.4fr)", minor: true, text: (r) => labelOf(r.label_a), tip: (r) => r.label_a, sort: (r) => r.label_a || null },
  { key: "to", label: "To", width: "5.6rem", text: (r) => `L${r.layer_b}:F${r.feature_b}`, sort: (r) => r.layer_b * 1e6 + r.feature_b },
  { key: "toLabel", label: "Name", width: "minmax(5rem, 1.4fr)", text: (r) => labelOf(r.label_b), tip: (r) => r.label_b, sort: (r) => r.label_b || null },
  { key: "weight", label: "Weight", width: "4.8rem", num: true, text: (r) => num(r.weight), sort: (r) => r.weight },
  { key: "null_p", label: "Null p", width: "4.8rem", num: true, minor: true, text: (r) => num(r.null_p, 2), sort: (r) => r.null_p },
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
    fill(top, table({ caption: "Top links of the pair", columns: [{ label: "From" }, { label: "To" }, { label: "Weight", num: true }],
      rows: list.map((r) => [featureLink(r.layer_a, r.feature_a, null, labelOf(r.label_a)), featureLink(r.layer_b, r.feature_b, null, labelOf(r.label_b)), num(r.weight)]) }));
  };
  select.addEventListener("change", showPair);
  showPair();
  append(el,
    hasNull ? null : h("p", { class: "notice" }, "No chance model was recorded for these edges: their weights cannot be compared with what shared gene identity alone would give."),
    h("p", { class: "muted" }, "Two kinds of edge link features of different layers: ", h("b", {}, "co-firing"), " ", help("pmi", "PMI"),
      " (the features fire on the same tokens more than chance) and ", h("b", {}, "decoder cosine"), " ", help("decoder_cosine", "decoder cosine"), " (they write similar directions). Their weights are not comparable."),
    picture(d),
    fold({ title: "Layer pairs", summary: `${int(d.pairs.length)} pairs`, body: [
      table({ caption: "Per layer pair and kind of edge", scroll: true, columns: [{ label: "Pair" }, { label: "Kind" }, { label: "Edges", num: true },
        { label: "Upstream features", num: true }, { label: "Downstream features", num: true }, { label: "Mean weight", num: true }, { label: "Max weight", num: true }],
      rows: d.pairs.map((p) => [`L${p.layer_a} → L${p.layer_b}`, kindText(p.kind), int(p.edges), int(p.features_a), int(p.features_b), num(p.mean_weight), num(p.max_weight)]) }),
      published(d.pairs)] }),
    fold({ title: "Top links of one pair", summary: "the 20 strongest edges of a pair", body: [h("div", { class: "toolbar" }, h("label", { for: "pair" }, "Pair "), select), top] }),
    fold({ title: `Every edge (${int(edges.length)})`, summary: "sortable; a row opens the downstream feature", body: [
      vtable({ columns: COLUMNS, rows: edges, label: "Cross-layer edges", href: (r) => `#/feature/${r.layer_b}/${r.feature_b}`, sort: { key: "weight", dir: -1 } }).el,
      h("p", { class: "muted" }, "Each row opens the downstream feature; its page links back upstream.")] }));
}

function published(pairs) {
  const pub = pairs.filter((p) => Object.keys(p.published || {}).length);
  if (!pub.length) return null;
  return [h("h3", {}, "As published"), table({ caption: "Published pair summaries", scroll: true,
    columns: [{ label: "Pair" }, { label: "Features with edges", num: true }, { label: "Mean max PMI", num: true }, { label: "Upstream coverage", num: true }, { label: "Downstream coverage", num: true }],
    rows: pub.map((p) => [`L${p.layer_a} → L${p.layer_b}`, int(p.published.n_features_with_deps), num(p.published.mean_max_pmi), pct(p.published.upstream_coverage), pct(p.published.downstream_coverage)]) })];
}

// Modules as nodes: one column per linked layer (only the layers that have links), modules in a column ranked by
// size (largest at the top), lines between modules as thick as the number of edges between their features.
function picture(d) {
  const links = rows(d.module_links);
  if (!links.length) return h("div", { id: "flow-plot" }, h("p", { class: "muted" }, "No edge joins two features that both belong to modules."));
  const kind = links.some((l) => l.kind === "cross_layer_pmi") ? "cross_layer_pmi" : links.some((l) => l.kind === "cross_layer") ? "cross_layer" : links[0].kind;
  const use = links.filter((l) => l.kind === kind).sort((a, b) => b.edges - a.edges);
  const info = new Map(rows(d.modules || {}).map((m) => [`${m.layer}:${m.module}`, m]));
  const layers = [...new Set(use.flatMap((l) => [l.layer_a, l.layer_b]))].sort((a, b) => a - b);
  const byLayer = new Map(layers.map((l) => [l, new Set()]));
  for (const l of use) { byLayer.get(l.layer_a).add(l.module_a); byLayer.get(l.layer_b).add(l.module_b); }
  const size = (l, m) => (info.get(`${l}:${m}`) || {}).n_features || 1;
  const rank = new Map();
  let most = 1;
  for (const [l, mods] of byLayer) {
    [...mods].sort((a, b) => size(l, b) - size(l, a) || a - b).forEach((m, i) => rank.set(`${l}:${m}`, i + 1));
    most = Math.max(most, mods.size);
  }
  const name = (l, m) => { const i = info.get(`${l}:${m}`); return `layer ${l}, module ${m}${i ? `${i.label ? `: ${i.label}` : ""} (${int(i.n_features)} features)` : ""}`; };
  const W = chartWidth(), H = Math.max(220, Math.min(520, 40 + most * 26)), L = 58, R = 16, T = 14, B = 42;
  const x = (l) => L + 30 + (layers.indexOf(l) * (W - L - R - 60)) / Math.max(1, layers.length - 1);
  const y = (r) => T + 8 + ((r - 1) * (H - T - B - 16)) / Math.max(1, most - 1);
  const maxEdges = use[0].edges, maxSize = Math.max(...[...info.values()].map((m) => m.n_features), 1);
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `Modules of linked layers joined by ${kindText(kind)} edges between their features; thicker lines carry more edges` },
    svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }), svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }),
    svg("text", { class: "axis-title", x: L + (W - L - R) / 2, y: H - 6, "text-anchor": "middle" }, "Layer"),
    svg("text", { class: "axis-title", x: 12, y: (H - B + T) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(H - B + T) / 2})` }, "Module rank by size"));
  for (const r of [...new Set([1, ...niceTicks(1, most, 4).filter((t) => t >= 1 && t <= most && Number.isInteger(t)), most])]) {
    root.append(svg("text", { class: "tick tick-y", x: L - 6, y: y(r) + 4, "text-anchor": "end" }, String(r)));
  }
  for (const l of layers) root.append(svg("text", { class: "tick tick-x", x: x(l), y: H - B + 15, "text-anchor": "middle" }, String(l)));
  for (const l of use.slice().reverse()) {
    const x0 = x(l.layer_a), y0 = y(rank.get(`${l.layer_a}:${l.module_a}`)), x1 = x(l.layer_b), y1 = y(rank.get(`${l.layer_b}:${l.module_b}`)), mid = (x0 + x1) / 2;
    const text = `${name(l.layer_a, l.module_a)} → ${name(l.layer_b, l.module_b)}: ${plural(l.edges)}`;
    root.append(svg("path", { d: `M${x0},${y0} C${mid},${y0} ${mid},${y1} ${x1},${y1}`, fill: "none", stroke: "var(--bar)", "stroke-opacity": 0.45,
      "stroke-width": 1 + 7 * (l.edges / maxEdges), "data-tip": text }, svg("title", {}, text)));
  }
  for (const [l, mods] of byLayer) {
    for (const m of mods) {
      const text = name(l, m);
      root.append(svg("circle", { cx: x(l), cy: y(rank.get(`${l}:${m}`)), r: 3 + 7 * Math.sqrt(size(l, m) / maxSize), fill: "var(--bar2)", stroke: "var(--bg)", "data-tip": text }, svg("title", {}, text)));
    }
  }
  const strongest = use.slice(0, 8);
  return [h("h2", {}, "Modules linked across layers"),
    h("div", { id: "flow-plot" }, figure(`Modules of adjacent layers joined by ${kindText(kind)} edges between their features`, tipBox(root),
      "Each dot is a module (its area grows with its features), ranked by size in its layer; each line joins two modules whose features share edges, thicker for more edges. Hover or tap a dot or line for its names.")),
    table({ caption: "Strongest links between modules", columns: [{ label: "From module" }, { label: "To module" }, { label: "Edges", num: true }],
      rows: strongest.map((l) => [name(l.layer_a, l.module_a), name(l.layer_b, l.module_b), int(l.edges)]) })];
}

const plural = (n) => `${int(n)} edge${n === 1 ? "" : "s"}`;
