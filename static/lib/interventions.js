// The "Interventions" section of a feature page: causal patching (effect bars with intervals, specificity
// against its null) and perturbation response. Everything from data is inserted as text.
import { h, link, help, table, fold } from "./dom.js";
import { hbarChart, figure } from "./chart.js";
import { int, num, pval } from "./format.js";
import { rows } from "./data.js";

// The level is the build's own ([interventions] alpha, in the shard): never a constant of the page.
function verdict(c) {
  if (c.q == null) return "no test (too few of its top genes had a measured effect, or no null)";
  if (c.alpha == null) return `q = ${pval(c.q)} (the build recorded no level)`;
  return c.q < c.alpha ? `specific: its own genes are affected more than under its nulls (q < ${c.alpha})`
    : `not distinguishable from its nulls (q ≥ ${c.alpha})`;
}

function built(c) {
  const effects = rows(c.effects);
  return [
    h("dl", { class: "stats" },
      h("dt", {}, "Method"), h("dd", {}, c.method),
      c.selection ? [h("dt", {}, "Why tested"), h("dd", {}, c.selection === "top_attribution" ? "among the largest attribution scores of its layer" : "stratified random sample (by frequency)")] : null,
      h("dt", {}, "Cells patched"), h("dd", {}, int(c.n_cells)),
      h("dt", {}, "Specificity (AUC) ", help("specificity", "causal specificity")),
      h("dd", {}, c.specificity != null ? `${num(c.specificity)} vs null ${num(c.null_mean)} ± ${num(c.null_sd)} (${int(c.n_null)} nulls)` : "—"),
      h("dt", {}, "p / q"), h("dd", {}, `${pval(c.p)} / ${pval(c.q)}`),
      h("dt", {}, "Verdict"), h("dd", {}, verdict(c)),
      c.total_effect != null ? [h("dt", {}, "Total effect"), h("dd", {}, `${num(c.total_effect)} [${num(c.total_lo)}, ${num(c.total_hi)}]`)] : null,
      c.objective_change != null ? [h("dt", {}, "Change of the objective (exact / attribution)"), h("dd", {}, `${num(c.objective_change)} / ${num(c.attribution)}`)] : null),
    effects.length ? figure("Change of the model's output per gene when the feature is patched out, with its 95% interval (bootstrap over cells); orange: one of the feature's top genes",
      hbarChart({ title: "Effect of patching per gene", xTitle: "Mean change of the readout", format: (v) => num(v, 2), labelChars: 14, row: 16,
        items: effects.map((r) => ({ label: r.gene, value: r.delta, lo: r.ci_lo, hi: r.ci_hi, color: r.top_gene ? "var(--bar2)" : "var(--bar)",
          tip: `${r.gene}: ${num(r.delta)}${r.ci_lo != null ? ` [${num(r.ci_lo)}, ${num(r.ci_hi)}]` : ""}, ${int(r.n_cells)} cells${r.top_gene ? ", a top gene of the feature" : ""}` })) })) : null,
    effects.length ? fold({ title: "Effects as a table", level: "h3", open: false, body: table({ caption: "Genes most affected by patching", cls: "effects-table",
      columns: [{ label: "Gene" }, { label: "Effect", num: true }, { label: "Interval" }, { label: "Cells", num: true }, { label: "Top gene" }],
      rows: effects.map((r) => [link(`#/genes/${encodeURIComponent(r.gene)}`, r.gene), num(r.delta), r.ci_lo != null ? `[${num(r.ci_lo)}, ${num(r.ci_hi)}]` : "—",
        int(r.n_cells), r.top_gene ? "yes" : ""]) }) }) : null,
  ];
}

function published(c) {
  return [h("p", { class: "notice" }, "Published values: no null, no interval and no p-value; the readout is the logit of a gene the model sees at that position."),
    h("dl", { class: "stats" },
      h("dt", {}, "Target / other change"), h("dd", {}, `${num(c.target_change)} / ${num(c.other_change)}`),
      h("dt", {}, "Ratio |target| / |other|"), h("dd", {}, num(c.specificity_ratio)),
      c.top_genes ? [h("dt", {}, "Target genes"), h("dd", {}, c.top_genes.join(", "))] : null)];
}

function perturbations(list) {
  if (!list.length) return null;
  return [h("h3", {}, "Perturbation response"),
    table({ caption: "Perturbation response", columns: [{ label: "Perturbed gene" }, { label: "Effect", num: true }, { label: "Interval" }, { label: "q", num: true }, { label: "Transcription factor" }, { label: "Dataset" }],
      rows: list.map((r) => [link(`#/tf/${encodeURIComponent(r.perturbation)}`, r.perturbation), num(r.effect), r.ci_lo != null ? `[${num(r.ci_lo)}, ${num(r.ci_hi)}]` : "—", pval(r.q),
        r.is_tf == null ? "—" : r.is_tf ? "yes" : "no", r.dataset]) })];
}

export function interventionsSection(d, hasCausal) {
  const c = d.causal;
  const body = !c ? h("p", { class: "muted" }, hasCausal
    ? "Not tested: this feature was not in its layer's patched sample (the features of largest attribution plus a stratified random sample)."
    : "Not tested: this atlas has no intervention results.")
    : c.specificity_ratio != null && c.specificity == null ? published(c) : built(c);
  return fold({ title: "Interventions", id: "int-h", summary: c ? (c.specificity_ratio != null && c.specificity == null ? "published patching ratio" : "causal patching") : "not tested",
    body: [body, perturbations(d.perturbation)] });
}
