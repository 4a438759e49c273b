// #/comparisons : the SAE against simpler bases (SVD/PCA metrics beside their random expectation), feature
// persistence across layers, and causal specificity where the atlas has it. Charts are Plotly (loaded here only).
import { h, help, table, featureLink, missing, fill, append } from "../lib/dom.js";
import { boot, load, rows } from "../lib/data.js";
import { num } from "../lib/format.js";
import { loadPlotly, themeLayout, plotConfig } from "../lib/plotly.js";
import { PALETTE } from "../lib/map.js";

const nice = (m) => m.replace(/_/g, " ");

export async function render(el) {
  const d = await load("comparisons.json");
  append(el, h("h1", {}, "Comparisons"),
    h("p", { class: "muted" }, "How the SAE's features compare with simpler descriptions of the same activations, how long features persist across layers, and what patching them does."));
  const charts = [];
  if (d.svd.length) {
    const layers = boot.layers.map((l) => l.layer);
    const plot = h("div", { class: "plot" });
    charts.push([plot, d.svd.flatMap((m, i) => [
      { type: "scatter", mode: "lines+markers", name: nice(m.metric), x: layers, y: layers.map((l) => m.values[l] ?? null), line: { color: PALETTE[i % PALETTE.length] } },
      ...(m.baseline ? [{ type: "scatter", mode: "lines", name: `${nice(m.metric)}: ${nice(m.baseline)}`, x: layers, y: layers.map((l) => m.baseline_values[l] ?? null), line: { color: PALETTE[i % PALETTE.length], dash: "dot" } }] : [])]),
      { xaxis: { title: { text: "Layer" }, dtick: 1 }, yaxis: { title: { text: "Value" } } }]);
    append(el, h("h2", {}, "SAE vs SVD/PCA ", help("svd_aligned", "SVD alignment")),
      h("p", {}, "Each metric per layer (solid) beside its baseline where the atlas has one (dotted), such as the share a random direction would reach (k/d for a k-dimensional span in d dimensions)."),
      plot, table({ caption: "SVD comparison metrics", columns: [{ label: "Metric" }, { label: "Baseline" }, ...layers.map((l) => ({ label: `Layer ${l}`, num: true }))],
        rows: d.svd.map((m) => [nice(m.metric), m.baseline ? nice(m.baseline) : "—", ...layers.map((l) => m.values[l] == null ? "—" : m.baseline ? `${num(m.values[l])} / ${num(m.baseline_values[l])}` : num(m.values[l]))]) }));
  }
  const adj = d.persistence.filter((r) => r.kind === "adjacent_persistence");
  if (adj.length) {
    const plot = h("div", { class: "plot" });
    charts.push([plot, [{ type: "scatter", mode: "lines+markers", name: "matched (cosine ≥ threshold)", x: adj.map((r) => r.from_layer), y: adj.map((r) => r.persistence_rate) },
      { type: "scatter", mode: "lines+markers", name: "high match", x: adj.map((r) => r.from_layer), y: adj.map((r) => r.high_persistence_rate) }],
      { xaxis: { title: { text: "From layer" }, dtick: 1 }, yaxis: { title: { text: "Share of features" }, tickformat: ".1%" } }]);
    const cfg = (d.extras.persistence || {}).config || {};
    append(el, h("h2", {}, "Persistence across layers"),
      h("p", {}, `The share of a layer's features whose decoder direction has a match in the next layer${cfg.match_threshold != null ? ` (cosine ≥ ${cfg.match_threshold}; high: ≥ ${cfg.high_match_threshold})` : ""}. No random baseline was published for these rates.`),
      plot, table({ caption: "Adjacent-layer persistence", columns: [{ label: "Layers" }, { label: "Matches", num: true }, { label: "Rate", num: true }, { label: "Mean cosine", num: true }],
        rows: adj.map((r) => [`${r.from_layer} → ${r.to_layer}`, num(r.n_matches), num(r.persistence_rate), num(r.mean_match_cosine)]) }));
  }
  const causal = rows(d.causal).sort((a, b) => (b.specificity_ratio ?? 0) - (a.specificity_ratio ?? 0));
  if (causal.length) {
    const plot = h("div", { class: "plot" });
    charts.push([plot, [{ type: "bar", x: causal.map((r) => `L${r.layer ?? "?"}:F${r.feature}`), y: causal.map((r) => r.specificity_ratio), marker: { color: "#4a7fd0" }, name: "specificity" }],
      { xaxis: { title: { text: "Feature" }, type: "category" }, yaxis: { title: { text: "Specificity (log scale)" }, type: "log" }, showlegend: false,
        shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: 1, y1: 1, line: { dash: "dot", color: "#888" } }] }]);
    append(el, h("h2", {}, "Causal specificity ", help("specificity", "causal specificity")),
      h("p", {}, "Patching a feature changes its target genes' output; specificity is that change over the change for other genes. The dotted line at 1 is no specificity."),
      plot, table({ caption: "Causal patching", columns: [{ label: "Feature" }, { label: "Specificity", num: true }, { label: "Target change", num: true }, { label: "Other change", num: true }],
        rows: causal.map((r) => [featureLink(r.layer, r.feature), num(r.specificity_ratio), num(r.target_change), num(r.other_change)]) }));
  }
  if (!charts.length) return append(el, h("p", { class: "muted" }, "This atlas has no comparison data."));
  setTimeout(() => plotAll(charts), 0); // after the view is in the page, so Plotly sees the real width
}

async function plotAll(charts) {
  try {
    const Plotly = await loadPlotly();
    for (const [box, traces, layout] of charts) {
      await Plotly.newPlot(box, traces, themeLayout({ height: 320, ...layout }), plotConfig);
            box.setAttribute("role", "figure");
      box.setAttribute("aria-label", "Interactive chart; the table below holds the same numbers.");
    }
  } catch (err) {
    for (const [box] of charts) fill(box, missing("The interactive chart", err));
  }
}
