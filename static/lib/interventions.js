// The "Interventions" section of a feature page: causal patching (effect bars with intervals, specificity
// against its null) and perturbation response. Everything from data is inserted as text.
import { h, link, help, table, svg } from "./dom.js";
import { int, num, pval } from "./format.js";
import { rows } from "./data.js";

const W = 160, H = 14;

// One gene's effect as a bar from 0 with its interval as a whisker; every row shares the scale `max`.
function effectBar(delta, lo, hi, max) {
  const x = (v) => W / 2 + (W / 2 - 2) * Math.max(-1, Math.min(1, v / max));
  const a = x(Math.min(0, delta)), b = x(Math.max(0, delta));
  return svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `effect ${num(delta)}${lo != null ? `, interval ${num(lo)} to ${num(hi)}` : ""}` },
    svg("line", { x1: W / 2, x2: W / 2, y1: 0, y2: H, stroke: "#999" }),
    svg("rect", { x: a, y: 3, width: Math.max(1, b - a), height: H - 6, fill: delta < 0 ? "#c0504d" : "#4a7fd0" }),
    lo != null && hi != null ? svg("line", { x1: x(lo), x2: x(hi), y1: H / 2, y2: H / 2, stroke: "#222", "stroke-width": 1.5 }) : null);
}

// The level is the build's own ([interventions] alpha, in the shard): never a constant of the page.
function verdict(c) {
  if (c.q == null) return "no test (too few of its top genes had a measured effect, or no null)";
  if (c.alpha == null) return `q = ${pval(c.q)} (the build recorded no level)`;
  return c.q < c.alpha ? `specific: its own genes are affected more than under its nulls (q < ${c.alpha})`
    : `not distinguishable from its nulls (q ≥ ${c.alpha})`;
}

function built(c) {
  const effects = rows(c.effects);
  const max = Math.max(1e-9, ...effects.flatMap((r) => [Math.abs(r.delta ?? 0), Math.abs(r.ci_lo ?? 0), Math.abs(r.ci_hi ?? 0)]));
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
    effects.length ? table({ caption: "Genes most affected by patching", cls: "effects-table",
      columns: [{ label: "Gene" }, { label: "Effect", num: true }, { label: "Interval" }, { label: "" }, { label: "Cells", num: true }, { label: "Top gene" }],
      rows: effects.map((r) => [link(`#/genes/${encodeURIComponent(r.gene)}`, r.gene), num(r.delta), r.ci_lo != null ? `[${num(r.ci_lo)}, ${num(r.ci_hi)}]` : "—",
        effectBar(r.delta ?? 0, r.ci_lo, r.ci_hi, max), int(r.n_cells), r.top_gene ? "yes" : ""]) }) : null,
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
  return h("section", { "aria-labelledby": "int-h" }, h("h2", { id: "int-h" }, "Interventions"), body, perturbations(d.perturbation));
}
