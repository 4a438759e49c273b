// #/feature/L/F : one feature's statistics, top genes, enrichments by database, cell types (by effect), cell map,
// module, side analyses and cross-layer neighbours.
import { h, link, featureLink, help, table, missing, append } from "../lib/dom.js";
import { boot, load, loadFeature, layerIds, labelOf } from "../lib/data.js";
import { int, num, pct, pval } from "../lib/format.js";
import { toCSV, download, copy } from "../lib/export.js";
import { cellMapSection } from "../lib/cells.js";
import { interventionsSection } from "../lib/interventions.js";
import { linksSection } from "../lib/links.js";

export async function render(el, layerParam, featureParam) {
  const layer = Number(layerParam), f = Number(featureParam);
  if (!layerIds().includes(layer)) throw new Error(`This atlas has no layer ${layer}. Its layers are ${layerIds().join(", ")}.`);
  const info = boot.layers.find((l) => l.layer === layer);
  if (f >= info.n_features) throw new Error(`Layer ${layer} has no feature ${f}: its features are numbered 0 to ${info.n_features - 1}.`);
  const d = await loadFeature(layer, f);
  if (!d) throw new Error(`Layer ${layer} has no feature ${f}.`);
  const name = `L${layer}:F${f}`;
  append(el, 
    h("p", { class: "muted" }, link(`#/layer/${layer}`, `← Layer ${layer}`), " · ",
      f > 0 ? featureLink(layer, f - 1, "previous") : "previous", " · ", f + 1 < info.n_features ? featureLink(layer, f + 1, "next") : "next"),
    h("h1", {}, name),
    h("p", { class: "feature-label" }, d.label ? [d.label, h("span", { class: "muted" }, ` (${d.database || "database not recorded"}${d.q != null ? `, q = ${pval(d.q)}` : ""}) `), help("label", "a label")]
      : h("span", { class: "muted" }, "Unlabelled: no gene-set term passed the atlas' threshold.")),
    h("dl", { class: "stats" },
      h("dt", {}, "Status"), h("dd", {}, d.alive ? "alive" : "dead (never fired on the dataset)"),
      h("dt", {}, "Activation frequency ", help("frequency", "activation frequency")), h("dd", {}, `${pct(d.frequency)} of tokens (${int(d.fire_count)} fires)`),
      h("dt", {}, "Mean activation ", help("mean_activation", "mean activation")), h("dd", {}, num(d.mean_activation)),
      h("dt", {}, "Module ", help("module", "a module")), h("dd", {}, d.module != null ? [link(`#/modules/${layer}`, `Module ${d.module}`), ` · ${labelOf(d.module_label)} · ${int(d.module_n_features)} features`] : "none"),
      d.svd_aligned != null ? [h("dt", {}, "SVD-aligned ", help("svd_aligned", "SVD alignment")), h("dd", {}, d.svd_aligned ? "yes" : "no")] : null),
    genes(name, d.genes),
    enrichments(name, d.enrichments),
    celltypes(d.celltypes, d.top_cells),
    cellMapSection({ heading: "Cell map", what: "activation",
      source: boot.has_cells && load(`cellact/${layer}/${Math.floor(f / boot.bucket)}.json`).then((s) => s[String(f)]) }),
    interventionsSection(d, boot.has_causal),
    linksSection(layer, f),
    neighbours(d.neighbours),
  );
}

const GENE_HEAD = ["rank", "gene", "activation", "support", "gene_tokens", "score", "low_support"];

function genes(name, list) {
  const act = (g) => (typeof g.activation === "number" ? g.activation : 0);
  const max = Math.max(1e-9, ...list.map(act));
  const tsv = list.map((g) => g.gene).join("\n");
  const copyBtn = h("button", { type: "button", onclick: () => copy(tsv, copyBtn) }, "Copy gene list");
  const low = list.filter((g) => g.low_support).length;
  const hasTokens = list.some((g) => g.gene_tokens != null), hasScore = list.some((g) => g.score != null);
  const columns = [{ label: "Gene" }, { label: "Activation", num: true, help: ["activation", "top-gene activation"] }, { label: "" },
    { label: "Support", num: true, help: ["support", "support"] },
    ...(hasTokens ? [{ label: "Gene tokens", num: true, help: ["gene_tokens", "gene tokens"] }] : []),
    ...(hasScore ? [{ label: "Score", num: true, help: ["score", "the ranking score"] }] : [])];
  return h("section", { "aria-labelledby": "genes-h" },
    h("h2", { id: "genes-h" }, `Top genes (${list.length})`),
    h("div", { class: "actions" }, copyBtn,
      h("button", { type: "button", onclick: () => download(`${name.replace(":", "_")}_genes.csv`, toCSV(GENE_HEAD, list.map((g, i) => [i + 1, g.gene, g.activation, g.fire_count, g.gene_tokens, g.score, g.low_support]))) }, "Download genes (CSV)")),
    low ? h("p", { class: "notice" }, `${low} top gene${low === 1 ? " rests" : "s rest"} on fewer than 5 firing tokens (marked “low support”): treat ${low === 1 ? "its" : "their"} rank with caution.`) : null,
    list.length ? table({ caption: "Top genes", cls: "genes-table", columns,
      rows: list.map((g) => [link(`#/genes/${encodeURIComponent(g.gene)}`, g.gene), num(g.activation),
        h("span", { class: "bar", style: `width:${Math.max(1, (100 * act(g)) / max)}%` }),
        g.low_support ? h("span", {}, int(g.fire_count), " ", h("span", { class: "flag" }, "low support")) : int(g.fire_count),
        ...(hasTokens ? [int(g.gene_tokens)] : []), ...(hasScore ? [num(g.score)] : [])]) })
      : h("p", { class: "muted" }, "No top genes recorded."));
}

const ENR_HEAD = ["database", "term", "p", "q", "odds_ratio", "overlap", "overlap_genes", "set_size", "edge_density", "note"];

function enrichments(name, list) {
  const byDb = new Map();
  for (const r of list) { if (!byDb.has(r.database)) byDb.set(r.database, []); byDb.get(r.database).push(r); }
  const text = toCSV(ENR_HEAD, list.map((r) => ENR_HEAD.map((f) => r[f])));
  const copyBtn = h("button", { type: "button", onclick: () => copy(text, copyBtn) }, "Copy enrichment table");
  const termLink = (r, text) => link(`#/terms/${encodeURIComponent(`${r.database}:${r.term}`)}`, text);
  return h("section", { "aria-labelledby": "enr-h" },
    h("h2", { id: "enr-h" }, `Enrichments (${list.length})`),
    list.length ? h("div", { class: "actions" }, copyBtn,
      h("button", { type: "button", onclick: () => download(`${name.replace(":", "_")}_enrichments.csv`, text) }, "Download enrichments (CSV)")) : null,
    list.length ? [...byDb].map(([db, terms]) => {
      const density = terms.some((r) => r.edge_density != null);
      return h("div", { class: "db" },
        h("h3", {}, `${db} (${terms.length})`),
        table({ caption: `${db} enrichments`, columns: [{ label: "Term" }, { label: "p", num: true, help: ["p", "a p-value"] },
          density ? { label: "Edge density", num: true, help: ["edge_density", "edge density"] } : { label: "q", num: true, help: ["q", "a q-value"] },
          { label: "Odds ratio", num: true, help: ["odds_ratio", "an odds ratio"] }, { label: "Overlap", num: true, help: ["overlap", "overlap"] }, { label: "Genes" }],
        rows: terms.sort((a, b) => (a.q ?? a.edge_density ?? 1) - (b.q ?? b.edge_density ?? 1)).map((r) => [
          r.note ? h("span", {}, termLink(r, r.note)) : termLink(r, r.term),
          pval(r.p), r.edge_density != null ? num(r.edge_density, 2) : pval(r.q), num(r.odds_ratio), int(r.overlap), (r.overlap_genes || []).join(", ") || "—"]) }));
    }) : h("p", { class: "muted" }, "No term passed the atlas' significance threshold."));
}

function celltypes(cts, tops) {
  if (!cts.length && !tops.length) return h("section", {}, h("h2", {}, "Cell types"), h("p", { class: "muted" }, "No cell-type enrichment recorded."));
  const types = cts.filter((c) => c.level !== "tissue"), tissues = cts.filter((c) => c.level === "tissue");
  const hasAuc = types.some((c) => c.auc != null), hasFiring = types.some((c) => c.n_firing != null);
  const columns = [{ label: "Cell type" }, ...(hasAuc ? [{ label: "AUC", num: true, help: ["auc", "AUC"] }] : []),
    { label: "Odds ratio", num: true, help: ["odds_ratio", "an odds ratio"] }, { label: "q", num: true, help: ["q", "a q-value"] },
    ...(hasFiring ? [{ label: "Cells firing", num: true, help: ["n_firing", "cells firing"] }] : []),
    { label: "In top cells", num: true, help: ["n_top", "in top cells"] }];
  return h("section", { "aria-labelledby": "ct-h" },
    h("h2", { id: "ct-h" }, "Cell types"),
    types.length ? [h("p", { class: "muted" }, "Strongest effect first (", hasAuc ? "AUC" : "odds ratio", ")."),
      table({ caption: "Cell-type enrichment", columns, rows: types.map((c) => [link(`#/celltypes/${encodeURIComponent(c.name)}`, c.name),
        ...(hasAuc ? [num(c.auc)] : []), num(c.odds_ratio), pval(c.q),
        ...(hasFiring ? [c.n_firing != null ? `${int(c.n_firing)} of ${int(c.n_cells)}` : "—"] : []), int(c.n_top)]) })] : null,
    tissues.length ? [h("h3", {}, "Tissues"), table({ caption: "Tissue enrichment", columns: [{ label: "Tissue" }, { label: "Odds ratio", num: true }, { label: "q", num: true }],
      rows: tissues.map((c) => [c.name, num(c.odds_ratio), pval(c.q)]) })] : null,
    tops.length ? [h("h3", {}, "Most active cells"), table({ caption: "Most active cells", columns: [{ label: "Cell type" }, { label: "Tissue" }, { label: "Activation", num: true }],
      rows: tops.map((t) => [t.cell_type, t.tissue ?? "—", num(t.activation)]) })] : null);
}

const KIND = { cross_layer_pmi: "co-firing (PMI)", decoder_cosine: "decoder cosine" };

function neighbours(list) {
  if (!list.length) return h("section", {}, h("h2", {}, "Cross-layer neighbours"), h("p", { class: "muted" }, "No cross-layer edge links this feature."));
  return h("section", { "aria-labelledby": "xl-h" },
    h("h2", { id: "xl-h" }, `Cross-layer neighbours (${list.length})`),
    table({ caption: "Cross-layer neighbours", columns: [{ label: "Direction" }, { label: "Feature" }, { label: "Label" }, { label: "Kind" },
      { label: "Weight", num: true, help: ["pmi", "an edge weight"] }],
    rows: list.map((r) => [r.direction === "down" ? "→ downstream" : "← upstream", featureLink(r.neighbour_layer, r.neighbour_feature), labelOf(r.label), KIND[r.kind] || r.kind, num(r.weight)]) }));
}
