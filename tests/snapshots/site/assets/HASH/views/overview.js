// #/ : what the atlas is and what it finds. Key findings first, then counts, the annotation rate with every
// interval beside its baselines, the SAE training per layer, enrichments per database, every measure beside its
// null, interventions and the per-layer table. Sections fold on a phone.
import { h, link, help, table, fold, append, fill, missing } from "../lib/dom.js";
import { boot } from "../lib/data.js";
import { int, pct, plural } from "../lib/format.js";
import { barChart, figure } from "../lib/chart.js";
import { PALETTE } from "../lib/map.js";
import { dbName } from "../lib/names.js";
import { annotationSection, nullTable, nullRows, interval } from "../lib/baselines.js";
import { trainingSection } from "../lib/training.js";
import { linksOverview } from "../lib/links.js";

export function render(el) {
  const t = boot.totals, layers = boot.layers, nulls = nullRows();
  const card = (value, what, term) => h("div", { class: "card" }, h("b", {}, value), h("span", {}, what, term ? [" ", help(term, what)] : null));
  const measured = layers.filter((l) => l.annotated_rate != null);
  append(el,
    h("h1", {}, boot.title),
    boot.description ? h("p", { class: "muted" }, boot.description) : null,
    cellsNote(),
    findings(nulls),
    h("div", { class: "cards" },
      card(int(t.layers), "layers"), card(int(t.n_features), "features"), card(int(t.alive), "alive features", "alive"),
      card(int(t.annotated), measured.length < layers.length ? `annotated (in ${measured.length} of ${layers.length} layers)` : "annotated features", "annotated_rate"),
      card(t.annotated_rate == null ? "—" : pct(t.annotated_rate), t.annotated_rate_lo == null ? "of tested features" : `of tested, 95% interval ${pct(t.annotated_rate_lo)}–${pct(t.annotated_rate_hi)}`, "annotated_rate"),
      card(int(t.n_modules), "modules", "module")),
    annotationSection(nulls),
    trainingSection(),
    fold({ title: "Features per layer", summary: "alive and annotated", body: figure("Alive and annotated features per layer", barChart({ title: "Alive and annotated features per layer", labels: layers.map((l) => String(l.layer)), format: int, integer: true, yTitle: "Features",
      series: [{ name: "alive", color: "var(--bar)", values: layers.map((l) => l.alive) },
        { name: "annotated", color: "var(--bar2)", values: layers.map((l) => (l.annotations_absent ? null : l.annotated)) }] }),
      layers.some((l) => l.annotations_absent) ? "No annotated bar where a layer's annotation data was not published." : null) }),
    dbChart(),
    nullTable(nulls),
    interventions(),
    linksOverview(),
    fold({ title: "Layers", summary: `${plural(layers.length, "layer")}: counts, rates and training`, body: layerTable() }),
    h("p", {}, "Methods, parameters and downloads: ", link("#/about", "About this atlas"), ". What each number means: ", link("#/glossary", "Glossary"), "."),
  );
}

// Key findings: a few sentences a reader should see first, each read from the atlas' own numbers.
function findings(nulls) {
  const t = boot.totals, layers = boot.layers, out = [];
  const measured = layers.filter((l) => l.annotated_rate != null);
  if (measured.length) {
    const best = measured.reduce((a, b) => (b.annotated_rate > a.annotated_rate ? b : a));
    out.push(["Annotation", `${pct(t.annotated_rate)} of tested features have an enriched term (95% interval ${pct(t.annotated_rate_lo)}–${pct(t.annotated_rate_hi)}); layer ${best.layer} the most: ${interval(best.annotated_rate, best.annotated_rate_lo, best.annotated_rate_hi)}.`]);
  }
  const pooled = t.baselines || {};
  const base = ["random_dictionary", "random_genes"].find((b) => pooled[b]);
  if (base) {
    const b = pooled[base];
    const word = b.observed_hi < b.lo ? "fewer than" : b.observed_lo > b.hi ? "more than" : "about as many as";
    out.push(["Against chance", `The trained features are annotated ${word} ${base === "random_dictionary" ? "the untrained SAE's directions" : "random gene lists"}: ${interval(b.observed, b.observed_lo, b.observed_hi)} against ${interval(b.rate, b.lo, b.hi)}, pooled over layers.`]);
  } else if (!nulls.length && !layers.some((l) => l.annotated_null_rate != null)) {
    out.push(["Against chance", "Not measured for this atlas: the annotation rate cannot be compared with what random gene lists would reach."]);
  }
  const absent = layers.filter((l) => l.annotations_absent);
  if (absent.length) out.push(["Missing data", `The enrichment files of ${plural(absent.length, "layer")} (${absent.map((l) => l.layer).join(", ")}) were not published: those layers show no annotation result.`]);
  const tr = (boot.sae && boot.sae.training) || {};
  const ve = layers.map((l) => l.variance_explained).filter((v) => v != null);
  if (Object.keys(tr).length && ve.length) {
    const cos = Object.values(tr).map((x) => (x.decoder_init_cosine || {}).mean).filter((v) => v != null);
    out.push(["SAE training", `Held-out variance explained ${pct(Math.min(...ve))}–${pct(Math.max(...ve))} across layers; decoder rows end at a mean cosine of ${cos.length ? `${cos.map((c) => c.toFixed(2)).join(", ")}` : "—"} with their random start (1 = unchanged).`]);
  } else if (ve.length) {
    out.push(["Reconstruction", `Variance explained ${pct(Math.min(...ve))}–${pct(Math.max(...ve))} across layers (as published).`]);
  }
  if (!out.length) return null;
  return h("section", { "aria-label": "Key findings" }, h("h2", { class: "sr-only" }, "Key findings"),
    h("div", { class: "findings" }, out.map(([title, text]) => h("div", { class: "finding" }, h("b", {}, title), text))));
}

// Which cells pretrained the model and which cells the atlas describes (model.pretrained, dataset.heldout_source).
function cellsNote() {
  const m = boot.model || {}, d = boot.dataset || {}, p = m.pretrained, src = d.heldout_source || {};
  const parts = [];
  if (p) {
    const what = p.trained ? `pretrained by this project on ${int(p.cells)} cells of ${p.data}` : `untrained (random weights, the twin of a model pretrained on ${int(p.cells)} cells of ${p.data})`;
    parts.push(h("p", {}, h("b", {}, "A small demo model. "), `${m.name || m.family} is a small ${m.family} model (${int(p.layers)} layers × ${int(p.width)}) ${what}: not a published checkpoint, so its features show what a small model learns from few cells. `,
      p.card ? [h("a", { href: p.card }, "Model card"), " (objective, held-out accuracy against trivial baselines, loss curve)."] : null));
  }
  if (d.cells != null) {
    const held = src.kind === "the model's held-out cells"
      ? ` ${int(src.model_training_cells_in_data)} of them pretrained the model; the other ${int(src.in_this_data)} are the model's held-out cells, never seen in training, and the SAEs' variance explained and dead features are measured on them.`
      : src.kind === "drawn" ? ` ${int(d.heldout_cells)} of them, drawn at random (${src.why || "no record of the model's own held-out cells"}), are held out to measure the SAEs.`
      : p ? "" : " Which cells pretrained the model is not recorded in this atlas.";
    parts.push(h("p", {}, h("b", {}, "Cells. "), `The atlas describes ${int(d.cells)} cells${d.name ? ` of ${d.name}` : ""}${d.tokens != null ? ` (${int(d.tokens)} gene tokens)` : ""}.`, held));
  }
  if (p) parts.push(h("p", {}, "Build an atlas of a real model: ", h("code", {}, `atlas build --model ${m.family} --checkpoint DIR --data FILE.h5ad --train-sae --cell-type-column COL`)));
  return parts.length ? h("section", { class: `notice${p ? " demo-model" : ""}` }, parts) : null;
}

function dbChart() {
  const d = boot.db_counts;
  if (!d || !d.databases.length) return null;
  const byLayer = new Map(d.layers.map((l, i) => [l, d.counts[i]]));
  return fold({ title: "Enrichments per database", summary: `${plural(d.databases.length, "database")}`, body: figure("Enrichments per gene-set database and layer",
    barChart({ title: "Enrichments per database and layer", labels: boot.layers.map((l) => String(l.layer)), format: int, integer: true, yTitle: "Enrichments",
      series: d.databases.map((db, j) => ({ name: dbName(db), color: PALETTE[j % PALETTE.length], values: boot.layers.map((l) => (l.annotations_absent ? null : (byLayer.get(l.layer) || [])[j] || 0)) })) })) });
}

// The interventions block, loaded only by atlases that have one (the render preloads it with this view then).
function interventions() {
  if (!boot.interventions) return null;
  const slot = h("div", { class: "interventions-slot" });
  import("../lib/interventions_summary.js").then((m) => fill(slot, m.interventionsBlock(boot.interventions)))
    .catch((err) => fill(slot, missing("The interventions summary", err)));
  return slot;
}

function layerTable() {
  const tr = (boot.sae && boot.sae.training) || {};
  return table({ caption: "Per-layer summary", scroll: true, columns: [{ label: "Layer" }, { label: "Features", num: true }, { label: "Alive", num: true },
    { label: "Tested", num: true, help: ["tested", "tested features"] }, { label: "Annotated", num: true }, { label: "Rate [95% interval]", num: true, help: ["annotated_rate", "the annotation rate"] },
    { label: "Modules", num: true }, { label: "Var. explained", num: true, help: ["variance_explained", "variance explained"] },
    { label: "Dead", num: true, help: ["dead_features", "dead features"] }, { label: "SAE steps", num: true }],
  rows: boot.layers.map((l) => [link(`#/layer/${l.layer}`, `Layer ${l.layer}`), int(l.n_features), int(l.alive),
    l.annotations_absent ? h("span", { class: "absent" }, "not published") : int(l.tested),
    l.annotations_absent ? h("span", { class: "absent" }, l.published_annotated != null ? `${int(l.published_annotated)} (published count)` : "not published") : int(l.annotated),
    l.annotations_absent ? h("span", { class: "absent" }, "not published") : interval(l.annotated_rate, l.annotated_rate_lo, l.annotated_rate_hi),
    int(l.n_modules), pct(l.variance_explained), int(l.dead_features), int(l.sae_steps ?? (tr[String(l.layer)] || {}).steps)]) });
}
