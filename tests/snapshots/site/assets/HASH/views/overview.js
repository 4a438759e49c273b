// #/ : what the atlas is, per-layer statistics and charts, each rate beside its null baselines.
import { h, link, help, table, append, fill, missing } from "../lib/dom.js";
import { boot, rows } from "../lib/data.js";
import { int, num, pct } from "../lib/format.js";
import { barChart, lineChart } from "../lib/chart.js";
import { PALETTE } from "../lib/map.js";
import { linksOverview } from "../lib/links.js";

export function render(el) {
  const t = boot.totals, layers = boot.layers, nulls = rows(boot.nulls);
  const labels = layers.map((l) => String(l.layer));
  const rate = layers.map((l) => l.annotated_rate);
  const nullRate = layers.map((l) => l.annotated_null_rate);
  const hasNull = nullRate.some((v) => v != null) || nulls.length > 0;
  const card = (value, what) => h("div", { class: "card" }, h("b", {}, value), h("span", {}, what));
  const rateMax = Math.max(0.05, ...rate.filter((v) => v != null), ...nullRate.filter((v) => v != null));
  append(el, 
    h("h1", {}, boot.title),
    boot.description ? h("p", { class: "muted" }, boot.description) : null,
    pretrainedNote(boot.model),
    h("div", { class: "cards" },
      card(int(t.layers), "layers"), card(int(t.n_features), "features"), card(int(t.alive), "alive features"),
      card(int(t.annotated), "annotated features"), card(pct(t.annotated_rate), "annotated of alive"),
      card(int(t.n_modules), "modules")),
    hasNull ? null : h("p", { class: "notice" },
      "Chance baseline: not measured for this atlas. Annotation rates here cannot be compared with what random gene lists would reach, so a high rate alone does not show that features are biological."),
    h("div", { class: "grid2" },
      h("figure", {}, h("figcaption", {}, "Alive and annotated features per layer"),
        barChart({ title: "Alive and annotated features per layer", labels, format: int, yTitle: "Features",
          series: [{ name: "alive", color: "var(--bar)", values: layers.map((l) => l.alive) },
                   { name: "annotated", color: "var(--bar2)", values: layers.map((l) => l.annotated) }] })),
      h("figure", {}, h("figcaption", {}, "Annotated share of alive features", hasNull ? ", and the share expected by chance" : "", " ", help("annotated_rate", "the annotation rate")),
        lineChart({ title: "Annotation rate per layer", labels, format: pct, max: rateMax, yTitle: "Share of alive",
          series: [{ name: "annotated", color: "var(--bar2)", values: rate },
                   { name: "expected by chance", color: "var(--muted)", dash: "4 3", values: nullRate }] }))),
    baselineTable(nulls),
    dbChart(),
    nulls.length ? nullTable(nulls) : null,
    interventions(),
    linksOverview(),
    h("h2", {}, "Layers"),
    table({ caption: "Per-layer summary", columns: [{ label: "Layer" }, { label: "Features", num: true }, { label: "Alive", num: true },
      { label: "Annotated", num: true }, { label: "Rate", num: true, help: ["annotated_rate", "the annotation rate"] },
      { label: "By chance", num: true, help: ["baseline", "a null baseline"] }, { label: "Modules", num: true },
      { label: "Var. explained", num: true, help: ["variance_explained", "variance explained"] }],
    rows: layers.map((l) => [link(`#/layer/${l.layer}`, `Layer ${l.layer}`), int(l.n_features), int(l.alive), int(l.annotated),
      pct(l.annotated_rate), pct(l.annotated_null_rate), int(l.n_modules), pct(l.variance_explained)]) }),
    h("p", {}, "Methods, parameters and downloads: ", link("#/about", "About this atlas"), "."),
  );
}

// The interventions block, loaded only by atlases that have one (the render preloads it with this view then).
function interventions() {
  if (!boot.interventions) return null;
  const slot = h("div", { class: "interventions-slot" });
  import("../lib/interventions_summary.js").then((m) => fill(slot, m.interventionsBlock(boot.interventions)))
    .catch((err) => fill(slot, missing("The interventions summary", err)));
  return slot;
}

// A model pretrained by `atlas pretrain` (the demo models): say what it is, link its card, show how a real
// atlas is built. Every value is inserted as text.
function pretrainedNote(model) {
  const p = model && model.pretrained;
  if (!p) return null;
  const what = p.trained ? `pretrained by this project on ${int(p.cells)} cells of ${p.data}` : `untrained (random weights, the twin of a model pretrained on ${int(p.cells)} cells of ${p.data})`;
  return h("section", { class: "notice demo-model" },
    h("p", {}, h("b", {}, "A small demo model. "), `This atlas comes from ${model.name || model.family}, a small ${model.family} model (${int(p.layers)} layers x ${int(p.width)}) ${what}: not a published checkpoint, so its features show what a small model learns from few cells. `,
      p.card ? h("a", { href: p.card }, "Model card") : null, p.card ? " (objective, held-out accuracy against trivial baselines, loss curve)." : ""),
    h("p", {}, "Build an atlas of a real model: ", h("code", {}, `atlas build --model ${model.family} --checkpoint DIR --data FILE.h5ad --train-sae --cell-type-column COL`)));
}

function dbChart() {
  const d = boot.db_counts;
  if (!d || !d.databases.length) return null;
  const byLayer = new Map(d.layers.map((l, i) => [l, d.counts[i]]));
  const labels = boot.layers.map((l) => String(l.layer));
  return h("figure", {}, h("figcaption", {}, "Enrichments per database and layer"),
    barChart({ title: "Enrichments per database and layer", labels, format: int, yTitle: "Enrichments",
      series: d.databases.map((db, j) => ({ name: db, color: PALETTE[j % PALETTE.length], values: boot.layers.map((l) => (byLayer.get(l.layer) || [])[j] || 0) })) }));
}

// Every measure beside each of its nulls: one row per analysis, measure and baseline, one cell per layer.
// nulls: rows of boot.nulls, {layer, analysis, measure, baseline, observed, expected, note} (builder/site/render.py).
const nullKey = (...parts) => parts.join("\u0000");
function nullTable(nulls) {
  const layers = [...new Set(nulls.map((r) => r.layer))].sort((a, b) => a - b);
  const keys = [...new Map(nulls.map((r) => [nullKey(r.analysis, r.measure, r.baseline), r])).values()];
  const share = (analysis, measure) => analysis === "annotation" || analysis === "svd" || /share|rate/.test(measure);
  const cell = (v, s) => (v == null ? "—" : s ? pct(v) : Number.isInteger(v) ? int(v) : num(v));
  const find = new Map(nulls.map((r) => [nullKey(r.layer, r.analysis, r.measure, r.baseline), r]));
  return h("section", {},
    h("h2", {}, "Observed vs chance ", help("baseline", "a null baseline")),
    h("p", {}, "How to read this: each cell is “observed / baseline” for one layer. The baseline is the same measure where no biology should be found (named in the Baseline column; hover a row for how it is made). An observed value close to its baseline says the atlas finds about as much there as chance would."),
    table({ caption: "Observed values beside their chance baselines", cls: "nulls",
      columns: [{ label: "Analysis" }, { label: "Measure" }, { label: "Baseline" }, ...layers.map((l) => ({ label: `Layer ${l}`, num: true }))],
      rows: keys.map(({ analysis, measure, baseline }) => [analysis, measure.replace(/_/g, " "), (baseline || "—").replace(/_/g, " "),
        ...layers.map((l) => {
          const r = find.get(nullKey(l, analysis, measure, baseline));
          const s = share(analysis, measure);
          return r ? h("span", { title: r.note || "" }, `${cell(r.observed, s)} / ${cell(r.expected, s)}`) : "—";
        })]) }));
}

// The annotation rate (any database) of each layer beside every baseline that ran, and, when the build ran on
// the model's untrained twin, modules and cross-layer edges beside the twin's. Atlases without these rows
// (imports) show only what they have: the table is left out and the tables above and below remain.
const BASELINE_NAMES = { random_genes: "random genes", pca: "principal directions", coexpression: "co-expressed genes",
  random_init_model: "untrained model" };
function baselineTable(nulls) {
  const ann = nulls.filter((r) => r.analysis === "annotation" && r.measure === "any database");
  if (!ann.length) return null;
  const names = [...new Set(ann.map((r) => r.baseline))].sort((a, b) => Object.keys(BASELINE_NAMES).indexOf(a) - Object.keys(BASELINE_NAMES).indexOf(b));
  const layers = [...new Set(ann.map((r) => r.layer))].sort((a, b) => a - b);
  const measure = (r) => (r.measure.startsWith("edges_beyond_gene_null_to_") ? "edges" : r.measure);
  const at = new Map(nulls.map((r) => [nullKey(r.layer, r.analysis, measure(r), r.baseline), r]));
  const get = (l, analysis, m, baseline) => at.get(nullKey(l, analysis, m, baseline));
  const twin = names.includes("random_init_model");
  const pair = (r) => (r ? `${int(r.observed)} / ${int(r.expected)}` : "—");
  const note = (name) => (ann.find((r) => r.baseline === name) || {}).note || "";
  return h("section", {},
    h("h2", {}, "Annotation rate against baselines ", help("baseline", "a null baseline")),
    h("p", {}, "How to read this: each cell is the share of gene lists with an enrichment at the same pooled FDR; the baselines' lists were made without the trained SAE, so a layer's features show more than these constructions only where the trained model's share clearly exceeds every baseline in its row.",
      twin ? " Modules and cross-layer edges read “trained model / untrained twin”: an untrained network already carries each gene's token from layer to layer." : ""),
    table({ caption: "Annotation rate of the trained model and of each baseline, per layer", cls: "baselines",
      columns: [{ label: "Layer" }, { label: "Trained model", num: true },
        ...names.map((n) => ({ label: BASELINE_NAMES[n] || n.replace(/_/g, " "), num: true })),
        ...(twin ? [{ label: "Modules", num: true }, { label: "Cross-layer edges", num: true }] : [])],
      rows: layers.map((l) => {
        const first = names.map((n) => get(l, "annotation", "any database", n)).find(Boolean);
        return [link(`#/layer/${l}`, `Layer ${l}`), pct(first ? first.observed : null),
          ...names.map((n) => { const r = get(l, "annotation", "any database", n); return h("span", { title: note(n) }, r ? pct(r.expected) : "—"); }),
          ...(twin ? [pair(get(l, "modules", "modules", "random_init_model")), pair(get(l, "cross_layer", "edges", "random_init_model"))] : [])];
      }) }));
}
