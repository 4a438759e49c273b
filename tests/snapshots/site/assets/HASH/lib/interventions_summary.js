// The overview's "Interventions" block (boot.interventions, from builder/site/perturbation.py): the causal
// specificity of the patched features against their null, and per perturbation dataset the share of specific TFs
// with its interval beside the expression ceiling, the non-TF negative control and the pseudo-perturbation
// false-positive rate. Absent when the atlas has no interventions data. Everything from data goes in as text.
import { h, link, help, table, svg } from "./dom.js";
import { int, num, pct } from "./format.js";

const share = (k, n, lo, hi) => (n == null ? "—" : `${int(k)} of ${int(n)} (${pct(k != null && n ? k / n : null)})${lo != null ? ` [${pct(lo)}, ${pct(hi)}]` : ""}`);

function causal(c) {
  if (!c) return null;
  if (c.published) {
    return h("p", { class: "notice" }, `Causal patching (published): ${int(c.n_tested)} features of ${c.layers.length ? `layer ${c.layers.join(", ")}` : "an unrecorded layer"}, median ratio ${num(c.median_ratio)}, ${int(c.n_above_2)} above 2. The study published no null, interval or p-value, so the ratios cannot be drawn against its null. `, help("specificity", "causal specificity"));
  }
  return [h("p", {}, `Causal patching: ${int(c.n_tested)} features patched (${c.layers.length === 1 ? "layer" : "layers"} ${c.layers.join(", ")}), ${int(c.n_scored)} of them with a specificity; `,
    c.alpha != null ? [h("b", {}, `${int(c.n_specific)} specific`), ` at q < ${c.alpha}. `] : null, `Median specificity ${num(c.median)} against ${num(c.null_median)} for the ${int(c.n_null)} values of their nulls (frequency-matched features and random directions) `, help("specificity", "causal specificity")),
  h("figure", { class: "specificity-hist" }, h("figcaption", {}, "Specificity (AUC) of the patched features (bars) and of their nulls (dashed outline); 0.5 = no preference for the feature's own genes"),
    histogram(c))];
}

// Shares per bin of [0, 1]: the features as bars, the pooled null as a dashed step outline, 0.5 marked.
function histogram(c) {
  const W = Math.round(Math.max(300, Math.min(560, (window.innerWidth || 560) - 48))), H = 170, L = 58, B = 34, T = 8;
  const norm = (a) => { const n = a.reduce((x, y) => x + y, 0); return a.map((v) => (n ? v / n : 0)); };
  const obs = norm(c.observed), nul = norm(c.null);
  const max = Math.max(0.01, ...obs, ...nul);
  const x = (v) => L + (W - L - 8) * v, y = (v) => T + (H - B - T) * (1 - v / max), bw = 1 / c.bins;
  const step = nul.map((v, i) => `${i ? "L" : "M"}${x(i * bw)},${y(v)} L${x((i + 1) * bw)},${y(v)}`).join(" ");
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `Specificity histogram: median ${num(c.median)}, null median ${num(c.null_median)}` },
    svg("line", { class: "axis", x1: L, x2: W - 8, y1: H - B, y2: H - B }), svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }),
    svg("text", { class: "tick tick-y", x: L - 6, y: T + 8, "text-anchor": "end" }, pct(max)), svg("text", { class: "tick tick-y", x: L - 6, y: H - B, "text-anchor": "end" }, "0%"),
    [0, 0.25, 0.5, 0.75, 1].map((t) => svg("text", { class: "tick tick-x", x: x(t), y: H - B + 14, "text-anchor": "middle" }, String(t))),
    svg("text", { class: "axis-title", x: L + (W - L) / 2, y: H - 4, "text-anchor": "middle" }, "Specificity (AUC)"),
    svg("text", { class: "axis-title", x: 12, y: (H - B + T) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(H - B + T) / 2})` }, "Share"),
    obs.map((v, i) => svg("rect", { x: x(i * bw) + 1, y: y(v), width: Math.max(1, x(bw) - L - 2), height: H - B - y(v), fill: "var(--bar2)" },
      svg("title", {}, `${(i * bw).toFixed(2)}–${((i + 1) * bw).toFixed(2)}: ${pct(v)} of the features, ${pct(nul[i])} of the nulls`))),
    svg("path", { d: step, fill: "none", stroke: "var(--muted)", "stroke-width": 1.5, "stroke-dasharray": "4 3" }),
    svg("line", { x1: x(0.5), x2: x(0.5), y1: T, y2: H - B, stroke: "var(--muted)", "stroke-width": 0.8 }));
  return h("div", { class: "chart-box" }, root, h("ul", { class: "legend" },
    h("li", {}, h("span", { class: "swatch", style: "background:var(--bar2);border-color:var(--bar2)" }), "patched features"),
    h("li", {}, h("span", { class: "swatch dashed", style: "background:transparent;border-color:var(--muted)" }), "nulls (pooled)")));
}

function details(d) {
  const items = [["source", d.source], ["parameters", d.parameters]].filter(([, v]) => v && Object.keys(v).length);
  if (!items.length) return null;
  return h("details", {}, h("summary", {}, `${d.dataset}: source and parameters`),
    items.map(([what, v]) => h("dl", { class: "stats", "aria-label": what }, Object.entries(v).map(([k, x]) => [h("dt", {}, k), h("dd", {}, x == null ? "—" : String(x))]))));
}

function perturbation(rows) {
  if (!rows.length) return null;
  const pub = rows.filter((d) => d.published);
  const levels = [...new Set(rows.filter((d) => !d.published && d.parameters && d.parameters.alpha != null).map((d) => d.parameters.alpha))];
  const level = levels.length > 1 ? "q below each dataset's alpha" : levels.length ? `q < ${levels[0]}` : "as published";
  return [h("p", {}, `Perturbation response: the share of transcription factors whose responding features carry their curated targets (${level}), with its exact (Clopper–Pearson) 95% interval, beside the same test on expression alone (the ceiling), on non-TF perturbations (negative control), and the share of features found responding to random control subsets (false-positive rate). `,
    link("#/tf", "All perturbed genes"), "."),
  table({ caption: "Share of specific TFs per perturbation dataset", cls: "tf-summary",
    columns: [{ label: "Dataset" }, { label: "Specific TFs", num: true, help: ["tf_verdict", "a TF verdict"] }, { label: "Expression ceiling", num: true, help: ["ceiling", "the expression ceiling"] },
      { label: "Non-TF control", num: true }, { label: "False-positive rate", num: true, help: ["false_positive_rate", "the pseudo-perturbation false-positive rate"] }],
    rows: rows.map((d) => [d.published ? [d.dataset, h("small", { class: "muted" }, " (published)")] : d.dataset,
      share(d.n_specific, d.n_tf, d.ci_lo, d.ci_hi), d.published ? "—" : share(d.ceiling_n_specific, d.n_tf, d.ceiling_ci_lo, d.ceiling_ci_hi),
      d.published ? "—" : share(d.negative_n_specific, d.negative_n), d.published || !d.pseudo ? "—" : pct(d.pseudo.false_positive_rate)]) }),
  pub.map((d) => h("p", { class: "notice" }, `${d.dataset}: the published summary (${int(d.n_specific)} of ${int(d.n_tf)} TFs${d.fraction != null ? `, ${pct(d.fraction)}` : ""}) has no test, ceiling or control behind it. `,
    d.ci_computed ? "Its interval was computed here (Clopper–Pearson, 95%) from the published counts; the study gave none. " : "No interval: the published counts are incomplete. ",
    d.lacks ? `What the published file lacks: ${d.lacks}.` : "")),
  rows.filter((d) => !d.published).map(details)];
}

export function interventionsBlock(s) {
  if (!s) return null;
  return h("section", { class: "interventions-summary", "aria-labelledby": "int-sum" },
    h("h2", { id: "int-sum" }, "Interventions"), causal(s.causal), perturbation(s.perturbation || []));
}
