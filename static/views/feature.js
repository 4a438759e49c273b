// #/feature/L/F : one feature's statistics, top genes, enrichments by database, cell types (by effect), cell map,
// side analyses and cross-layer neighbours. Sections fold on a phone, each with a one-line summary.
import { h, link, featureLink, help, table, fold, append } from "../lib/dom.js";
import { boot, load, loadFeature, layerIds, labelOf, termText } from "../lib/data.js";
import { int, num, pct, pval } from "../lib/format.js";
import { toCSV, download, copy } from "../lib/export.js";
import { cellMapSection } from "../lib/cells.js";
import { interventionsSection } from "../lib/interventions.js";
import { hbarChart, figure } from "../lib/chart.js";
import { dbName, kindName } from "../lib/names.js";
import { linksSection } from "../lib/links.js";

export async function render(el, layerParam, featureParam) {
  const layer = Number(layerParam), f = Number(featureParam);
  if (!layerIds().includes(layer)) throw new Error(`This atlas has no layer ${layer}. Its layers are ${layerIds().join(", ")}.`);
  const info = boot.layers.find((l) => l.layer === layer);
  if (f >= info.n_features) throw new Error(`Layer ${layer} has no feature ${f}: its features are numbered 0 to ${info.n_features - 1}.`);
  const d = await loadFeature(layer, f);
  if (!d) throw new Error(`Layer ${layer} has no feature ${f}.`);
  const id = `L${layer}:F${f}`;
  const name = d.label ? termText(d.label) : (d.genes.length ? d.genes.slice(0, 3).map((g) => g.gene).join(" ") : "");
  append(el,
    h("p", { class: "muted" }, link(`#/layer/${layer}`, `← Layer ${layer}`), " · ",
      f > 0 ? featureLink(layer, f - 1, "previous") : "previous", " · ", f + 1 < info.n_features ? featureLink(layer, f + 1, "next") : "next"),
    h("h1", {}, id, name ? h("span", { class: "fname" }, ` · ${name}`) : null),
    labelLine(d, info),
    h("dl", { class: "stats" },
      h("dt", {}, "Status"), h("dd", {}, d.alive ? "alive" : "dead (never fired on the dataset)"),
      h("dt", {}, "Activation frequency ", help("frequency", "activation frequency")), h("dd", {}, `${pct(d.frequency)} of tokens (${int(d.fire_count)} fires)`),
      h("dt", {}, "Mean activation ", help("mean_activation", "mean activation")), h("dd", {}, num(d.mean_activation)),
      h("dt", {}, "Module ", help("module", "a module")), h("dd", {}, d.module != null ? [link(`#/modules/${layer}`, `Module ${d.module}`), ` · ${labelOf(d.module_label)} · ${int(d.module_n_features)} features`] : "none"),
      d.svd_aligned != null ? [h("dt", {}, "SVD-aligned ", help("svd_aligned", "SVD alignment")), h("dd", {}, d.svd_aligned ? "yes" : "no")] : null),
    genes(id, d.genes),
    enrichments(id, d.enrichments, info),
    celltypes(d.celltypes, d.top_cells),
    cellMapSection({ heading: "Cell map", what: "activation",
      source: boot.has_cells && load(`cellact/${layer}/${Math.floor(f / boot.bucket)}.json`).then((s) => s[String(f)]) }),
    interventionsSection(d, boot.has_causal),
    linksSection(layer, f),
    neighbours(d.neighbours),
  );
}

// The label and where it comes from; a layer whose enrichment file was not published says so instead of a finding.
function labelLine(d, info) {
  if (info.annotations_absent) {
    return h("p", { class: "feature-label" }, d.label ? [termText(d.label), h("span", { class: "muted" }, ` (${dbName(d.database)}, the published label) `), help("label", "a label")] : null,
      h("span", { class: "absent" }, `${d.label ? " · " : ""}Annotation not published for this layer: its enrichment file was not published, so this feature's tests cannot be shown.`));
  }
  return h("p", { class: "feature-label" }, d.label ? [termText(d.label), h("span", { class: "muted" }, ` (${dbName(d.database)}${d.q != null ? `, q = ${pval(d.q)}` : ""}) `), help("label", "a label")]
    : h("span", { class: "muted" }, "Unlabelled: no gene-set term passed the atlas' threshold."));
}

const GENE_HEAD = ["rank", "gene", "activation", "support", "gene_tokens", "score", "low_support"];

function genes(id, list) {
  const tsv = list.map((g) => g.gene).join("\n");
  const copyBtn = h("button", { type: "button", onclick: () => copy(tsv, copyBtn) }, "Copy gene list");
  const low = list.filter((g) => g.low_support).length;
  const hasAct = list.some((g) => typeof g.activation === "number");
  const columns = [{ label: "Gene" }, { label: "Activation", num: true, help: ["activation", "top-gene activation"] },
    { label: "Support", num: true, help: ["support", "support"] }, { label: "Gene tokens", num: true, help: ["gene_tokens", "gene tokens"] },
    { label: "Score", num: true, help: ["score", "the ranking score"] }];
  const body = [
    h("div", { class: "actions" }, copyBtn,
      h("button", { type: "button", onclick: () => download(`${id.replace(":", "_")}_genes.csv`, toCSV(GENE_HEAD, list.map((g, i) => [i + 1, g.gene, g.activation, g.fire_count, g.gene_tokens, g.score, g.low_support]))) }, "Download genes (CSV)")),
    low ? h("p", { class: "notice" }, `${low} top gene${low === 1 ? " rests" : "s rest"} on fewer than 5 firing tokens (marked “low support”): treat ${low === 1 ? "its" : "their"} rank with caution.`) : null,
    hasAct ? figure(`Mean activation of the feature on its top genes' tokens, strongest first${low ? "; grey: low support" : ""}`, hbarChart({
      title: "Activation per top gene", xTitle: "Mean activation when firing", format: (v) => num(v, 2), labelChars: 16, row: 16,
      items: list.map((g) => ({ label: g.gene, value: typeof g.activation === "number" ? g.activation : null, color: g.low_support ? "var(--muted)" : "var(--bar)",
        tip: `${g.gene}: activation ${num(g.activation)}, support ${int(g.fire_count)} firing tokens${g.low_support ? " (low support)" : ""}` })) })) : null,
    list.length ? fold({ title: "Top genes as a table", level: "h3", open: false, summary: "support, gene tokens and score", body: table({ caption: "Top genes", cls: "genes-table", columns,
      rows: list.map((g) => [link(`#/genes/${encodeURIComponent(g.gene)}`, g.gene), num(g.activation),
        g.low_support ? h("span", {}, int(g.fire_count), " ", h("span", { class: "flag" }, "low support")) : int(g.fire_count),
        int(g.gene_tokens), num(g.score)]) }) })
      : h("p", { class: "muted" }, "No top genes recorded.")];
  return fold({ title: `Top genes (${list.length})`, open: true, summary: list.slice(0, 5).map((g) => g.gene).join(" "), body, id: "genes-h" });
}

const ENR_HEAD = ["database", "term", "p", "q", "odds_ratio", "overlap", "overlap_genes", "set_size", "edge_density", "note"];

function enrichments(id, list, info) {
  if (info.annotations_absent) {
    const n = info.published_annotated;
    return fold({ title: "Enrichments", open: true, summary: "not published for this layer", body: h("p", { class: "absent" },
      `Not published for this layer: the enrichment file of layer ${info.layer} was not published with the atlas, so no test of this feature can be shown.`,
      n != null ? ` The publication counts ${int(n)} annotated features in this layer (global_summary.json), which cannot be checked here.` : "") });
  }
  const real = list.filter((r) => !r.note), notes = list.filter((r) => r.note);
  const byDb = new Map();
  for (const r of real) { if (!byDb.has(r.database)) byDb.set(r.database, []); byDb.get(r.database).push(r); }
  const text = toCSV(ENR_HEAD, list.map((r) => ENR_HEAD.map((k) => r[k])));
  const copyBtn = h("button", { type: "button", onclick: () => copy(text, copyBtn) }, "Copy enrichment table");
  const termLink = (r, t) => link(`#/terms/${encodeURIComponent(`${r.database}:${r.term}`)}`, t);
  const best = real.slice().sort((a, b) => (a.q ?? a.edge_density ?? 1) - (b.q ?? b.edge_density ?? 1))[0];
  const body = [
    real.length ? h("div", { class: "actions" }, copyBtn,
      h("button", { type: "button", onclick: () => download(`${id.replace(":", "_")}_enrichments.csv`, text) }, "Download enrichments (CSV)")) : null,
    real.length ? [...byDb].map(([db, terms]) => h("div", { class: "db" },
      h("h3", {}, `${dbName(db)} (${terms.length})`),
      table({ caption: `${dbName(db)} enrichments`, columns: [{ label: "Term" }, { label: "p", num: true, help: ["p", "a p-value"] },
        { label: "q", num: true, help: ["q", "a q-value"] }, { label: "Edge density", num: true, help: ["edge_density", "edge density"] },
        { label: "Odds ratio", num: true, help: ["odds_ratio", "an odds ratio"] }, { label: "Overlap", num: true, help: ["overlap", "overlap"] }, { label: "Genes" }],
      rows: terms.sort((a, b) => (a.q ?? a.edge_density ?? 1) - (b.q ?? b.edge_density ?? 1)).map((r) => [termLink(r, termText(r.term)),
        pval(r.p), r.q == null ? "—" : pval(r.q), r.edge_density == null ? "—" : num(r.edge_density, 2), num(r.odds_ratio), int(r.overlap),
        (r.overlap_genes || []).join(", ") || "—"]) })))
      : h("p", { class: "muted" }, "No term passed the atlas' significance threshold."),
    notes.length ? h("p", { class: "notice" }, "Also in the published file, and not gene-set tests: ",
      notes.map((r, i) => [i ? "; " : "", termLink(r, r.note), r.edge_density != null ? ` (edge density ${num(r.edge_density, 2)})` : ""]), ". ", help("edge_density", "edge density")) : null,
    real.length && real.every((r) => r.p == null) ? h("p", { class: "muted small" }, "The published file gives adjusted p-values (q) only: no raw p-value or term size.") : null];
  return fold({ title: `Enrichments (${real.length})`, summary: best ? `best: ${termText(best.term)}` : "none passed", body, id: "enr-h" });
}

function celltypes(cts, tops) {
  if (!cts.length && !tops.length) return fold({ title: "Cell types", summary: "none recorded", body: h("p", { class: "muted" }, "No cell-type enrichment recorded.") });
  const types = cts.filter((c) => c.level !== "tissue"), tissues = cts.filter((c) => c.level === "tissue");
  const hasAuc = types.some((c) => c.auc != null);
  const columns = [{ label: "Cell type" }, { label: "AUC", num: true, help: ["auc", "AUC"] },
    { label: "Odds ratio", num: true, help: ["odds_ratio", "an odds ratio"] }, { label: "q", num: true, help: ["q", "a q-value"] },
    { label: "Cells firing", num: true, help: ["n_firing", "cells firing"] }, { label: "In top cells", num: true, help: ["n_top", "in top cells"] }];
  return fold({ title: "Cell types", summary: types.length ? `strongest: ${types[0].name}` : "tissues and top cells", id: "ct-h", body: [
    types.length ? [h("p", { class: "muted" }, "Strongest effect first (", hasAuc ? "AUC" : "odds ratio", ")."),
      table({ caption: "Cell-type enrichment", columns, rows: types.map((c) => [link(`#/celltypes/${encodeURIComponent(c.name)}`, c.name),
        num(c.auc), num(c.odds_ratio), pval(c.q), c.n_firing != null ? `${int(c.n_firing)} of ${int(c.n_cells)}` : "—", int(c.n_top)]) })] : null,
    tissues.length ? [h("h3", {}, "Tissues"), table({ caption: "Tissue enrichment", columns: [{ label: "Tissue" }, { label: "Odds ratio", num: true }, { label: "q", num: true }],
      rows: tissues.map((c) => [c.name, num(c.odds_ratio), pval(c.q)]) })] : null,
    tops.length ? [h("h3", {}, "Most active cells"), table({ caption: "Most active cells", columns: [{ label: "Cell type" }, { label: "Tissue" }, { label: "Activation", num: true }],
      rows: tops.map((t) => [t.cell_type, t.tissue ?? "—", num(t.activation)]) })] : null] });
}

function neighbours(list) {
  if (!list.length) return fold({ title: "Cross-layer neighbours", summary: "none", body: h("p", { class: "muted" }, "No cross-layer edge links this feature.") });
  return fold({ title: `Cross-layer neighbours (${list.length})`, summary: "features of other layers linked to this one", id: "xl-h", body:
    table({ caption: "Cross-layer neighbours", columns: [{ label: "Direction" }, { label: "Feature" }, { label: "Kind" },
      { label: "Weight", num: true, help: ["pmi", "an edge weight"] }],
    rows: list.map((r) => [r.direction === "down" ? "→ downstream" : "← upstream", featureLink(r.neighbour_layer, r.neighbour_feature, null, labelOf(r.label)), kindName(r.kind), num(r.weight)]) }) });
}
