// #/comparisons : the SAE against simpler bases (SVD/PCA metrics beside their random baseline), feature
// persistence across layers, and the published causal specificity. SVG charts (lib/chart.js), each with a caption,
// and the numbers in a table below it.
import { h, help, table, featureLink, fold, append } from "../lib/dom.js";
import { boot, load, rows, labelOf } from "../lib/data.js";
import { num, pct, pctTick, int } from "../lib/format.js";
import { lineChart, hbarChart, figure } from "../lib/chart.js";
import { PALETTE } from "../lib/map.js";

// share_10_mean, r2_50_p25, share_10_mean_expected, decoder_norm_top10_pcs ... in words.
const STATS = { mean: "mean", p10: "10th percentile", p25: "25th percentile", p50: "median", p75: "75th percentile", p90: "90th percentile" };
// The published Geneformer atlas' per-layer metrics (svd_comparison.json per_layer).
const PUBLISHED = { svd_variance: "Variance explained by the top principal axes (SVD)", sae_variance: "Variance explained by the SAE",
  gain: "Gain: the SAE's variance explained over the SVD's", n_aligned: "Features aligned with a principal axis", n_novel: "Features aligned with no principal axis" };
function parse(metric) {
  const m = /^(share|r2)_(\d+)_(mean|p\d+)(?:_(random|expected))?$/.exec(metric);
  if (!m) return { family: metric, stat: null, what: PUBLISHED[metric] || metric.replace(/_/g, " ").replace(/\bpcs\b/g, "PCs").replace(/\bpc\b/g, "PC") };
  const what = m[1] === "share" ? `Share of a decoder direction inside the top ${m[2]} principal axes` : `R² of a feature's activation on the top ${m[2]} principal scores (held-out tokens)`;
  return { family: `${m[1]}_${m[2]}`, stat: m[3], what };
}
const baseName = (b) => (!b ? "no baseline" : /_expected$/.test(b) ? "expected by chance (k/d)" : /random/.test(b) ? "random directions" : b.replace(/_/g, " "));

export async function render(el) {
  const d = await load("comparisons.json");
  append(el, h("h1", {}, "Comparisons"),
    h("p", { class: "muted" }, "How the SAE's features compare with simpler descriptions of the same activations, how long features persist across layers, and what patching them does."));
  const parts = [svdPart(d.svd), persistencePart(d), causalPart(rows(d.causal))].filter(Boolean);
  if (!parts.length) return append(el, h("p", { class: "muted" }, "This atlas has no comparison data."));
  append(el, parts);
}

function svdPart(svd) {
  if (!svd.length) return null;
  const layers = boot.layers.map((l) => l.layer), labels = layers.map(String);
  const families = new Map();
  for (const m of svd) {
    const p = parse(m.metric);
    if (!families.has(p.family)) families.set(p.family, { what: p.what, metrics: [] });
    families.get(p.family).metrics.push({ ...m, stat: p.stat });
  }
  const charts = [...families.values()].map((fam, i) => {
    const main = fam.metrics.find((m) => m.stat === "mean") || fam.metrics.find((m) => m.stat === "p50") || fam.metrics[0];
    const shares = /^Share/.test(fam.what);
    const fmt = shares ? pct : (v) => num(v, 2);
    const series = [{ name: `SAE features (${main.stat ? STATS[main.stat] || main.stat : "value"})`, color: PALETTE[i % PALETTE.length], values: layers.map((l) => main.values[l] ?? null) }];
    if (main.baseline) series.push({ name: baseName(main.baseline), color: "var(--muted)", dash: "4 3", values: layers.map((l) => main.baseline_values[l] ?? null) });
    return figure(`${fam.what}, per layer`, lineChart({ title: fam.what, labels, series, yTitle: shares ? "Share" : "Value", format: fmt, tickFormat: shares ? pctTick : fmt }),
      main.baseline ? "Solid: the SAE's features; dashed: the same measure for its baseline. Hover a point for its value." : "No baseline was recorded for this measure.");
  });
  return [h("h2", {}, "SAE vs principal directions ", help("svd_aligned", "SVD alignment")),
    h("p", {}, "Where the SAE's directions sit relative to the layer's principal axes, beside the same measure for random directions (or the share k/d a random k-dimensional span would hold)."),
    h("div", { class: "grid2" }, charts),
    fold({ title: "Every metric as a table", level: "h3", open: false, summary: `${int(svd.length)} metrics`, body: table({ caption: "SVD comparison metrics", scroll: true,
      columns: [{ label: "Metric" }, { label: "Baseline" }, ...layers.map((l) => ({ label: `Layer ${l}`, num: true }))],
      rows: svd.map((m) => [m.metric.replace(/_/g, " "), m.baseline ? baseName(m.baseline) : "—", ...layers.map((l) => m.values[l] == null ? "—" : m.baseline ? `${num(m.values[l])} / ${num(m.baseline_values[l])}` : num(m.values[l]))]) }) })];
}

function persistencePart(d) {
  const adj = d.persistence.filter((r) => r.kind === "adjacent_persistence");
  if (!adj.length) return null;
  const cfg = (d.extras.persistence || {}).config || {};
  const labels = adj.map((r) => `${r.from_layer}→${r.to_layer}`);
  return [h("h2", {}, "Persistence across layers"),
    h("p", {}, `The share of a layer's features whose decoder direction has a match in the next layer${cfg.match_threshold != null ? ` (cosine ≥ ${cfg.match_threshold}; high: ≥ ${cfg.high_match_threshold})` : ""}. No random baseline was published for these rates.`),
    figure("Share of features matched in the next layer", lineChart({ title: "Persistence across layers", labels, xTitle: "Layer pair", yTitle: "Share of features", format: pct, tickFormat: pctTick,
      series: [{ name: "matched (cosine ≥ threshold)", color: "var(--bar)", values: adj.map((r) => r.persistence_rate) },
        { name: "high match", color: "var(--bar2)", values: adj.map((r) => r.high_persistence_rate) }] })),
    fold({ title: "Persistence as a table", level: "h3", open: false, body: table({ caption: "Adjacent-layer persistence", columns: [{ label: "Layers" }, { label: "Matches", num: true }, { label: "Rate", num: true }, { label: "Mean cosine", num: true }],
      rows: adj.map((r) => [`${r.from_layer} → ${r.to_layer}`, num(r.n_matches), pct(r.persistence_rate), num(r.mean_match_cosine)]) }) })];
}

function causalPart(causal) {
  if (!causal.length) return null;
  causal.sort((a, b) => (b.specificity_ratio ?? 0) - (a.specificity_ratio ?? 0));
  const name = (r) => `L${r.layer ?? "?"}:F${r.feature}${r.label ? ` ${r.label}` : ""}`;
  return [h("h2", {}, "Causal specificity (published) ", help("specificity", "causal specificity")),
    h("p", {}, "Patching a feature out of the model changes the output for genes. The published ratio divides the change for the feature's own target genes by the change for other genes: above 1 (dashed line), patching hits its own genes harder. The study gave no null, interval or p-value, so a ratio cannot be called significant."),
    figure(`Published specificity ratio of the ${int(causal.length)} patched features, largest first`, hbarChart({
      title: "Causal specificity ratio per patched feature", xTitle: "Target change / other change (log scale)", log: true, format: (v) => num(v, 2),
      ref: { value: 1, label: "ratio 1: no preference for the feature's own genes" },
      items: causal.map((r) => ({ label: name(r), value: r.specificity_ratio > 0 ? r.specificity_ratio : null,
        tip: `${name(r)}: ratio ${num(r.specificity_ratio)} (target ${num(r.target_change)}, other ${num(r.other_change)})` })) })),
    fold({ title: "Patched features as a table", level: "h3", open: false, body: table({ caption: "Causal patching", columns: [{ label: "Feature" }, { label: "Specificity ratio", num: true }, { label: "Target change", num: true }, { label: "Other change", num: true }],
      rows: causal.map((r) => [featureLink(r.layer, r.feature, null, r.label ? labelOf(r.label) : null), num(r.specificity_ratio), num(r.target_change), num(r.other_change)]) }) })];
}
