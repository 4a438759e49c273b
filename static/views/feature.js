// #/feature/L/F : one feature's statistics, top genes, enrichments by database, cell types (by effect), cell map,
// module, side analyses and cross-layer neighbours.
import { h, link, featureLink, help, table, missing, append } from "../lib/dom.js";
import { boot, load, featureShard, layerIds, labelOf } from "../lib/data.js";
import { int, num, pct, pval } from "../lib/format.js";
import { toCSV, download, copy } from "../lib/export.js";
import { cellMapSection } from "../lib/cells.js";
import { interventionsSection } from "../lib/interventions.js";

export async function render(el, layerParam, featureParam) {
  const layer = Number(layerParam), f = Number(featureParam);
  if (!layerIds().includes(layer)) throw new Error(`This atlas has no layer ${layer}. Its layers are ${layerIds().join(", ")}.`);
  const info = boot.layers.find((l) => l.layer === layer);
  if (f >= info.n_features) throw new Error(`Layer ${layer} has no feature ${f}: its features are numbered 0 to ${info.n_features - 1}.`);
  const shard = await featureShard(layer, f);
  const d = shard.features[String(f)];
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
      h("dt", {}, "Module ", help("module", "a module")), h("dd", {}, d.module ? [link(`#/modules/${layer}`, `Module ${d.module[0]}`), ` · ${labelOf(d.module[1])} · ${int(d.module[2])} features`] : "none"),
      d.svd_aligned != null ? [h("dt", {}, "SVD-aligned ", help("svd_aligned", "SVD alignment")), h("dd", {}, d.svd_aligned ? "yes" : "no")] : null),
    genes(name, d.genes),
    enrichments(name, d.enrichments),
    celltypes(d.celltypes, d.top_cells),
    cellMapSection({ heading: "Cell map", what: "activation",
      source: boot.has_cells && load(`cellact/${layer}/${Math.floor(f / boot.bucket)}.json`).then((s) => s[String(f)]) }),
    interventionsSection(d, boot.has_causal),
    neighbours(d.neighbours),
  );
}

function genes(name, rows) {
  const max = Math.max(1e-9, ...rows.map((g) => (typeof g[1] === "number" ? g[1] : 0)));
  const tsv = rows.map((g) => g[0]).join("\n");
  const copyBtn = h("button", { type: "button", onclick: () => copy(tsv, copyBtn) }, "Copy gene list");
  const low = rows.filter((g) => g[5]).length;
  const hasTokens = rows.some((g) => g[3] != null), hasScore = rows.some((g) => g[4] != null);
  const columns = [{ label: "Gene" }, { label: "Activation", num: true, help: ["activation", "top-gene activation"] }, { label: "" },
    { label: "Support", num: true, help: ["support", "support"] },
    ...(hasTokens ? [{ label: "Gene tokens", num: true, help: ["gene_tokens", "gene tokens"] }] : []),
    ...(hasScore ? [{ label: "Score", num: true, help: ["score", "the ranking score"] }] : [])];
  return h("section", { "aria-labelledby": "genes-h" },
    h("h2", { id: "genes-h" }, `Top genes (${rows.length})`),
    h("div", { class: "actions" }, copyBtn,
      h("button", { type: "button", onclick: () => download(`${name.replace(":", "_")}_genes.csv`, toCSV(["rank", "gene", "activation", "support", "gene_tokens", "score", "low_support"], rows.map((g, i) => [i + 1, ...g]))) }, "Download genes (CSV)")),
    low ? h("p", { class: "notice" }, `${low} top gene${low === 1 ? " rests" : "s rest"} on fewer than 5 firing tokens (marked “low support”): treat ${low === 1 ? "its" : "their"} rank with caution.`) : null,
    rows.length ? table({ caption: "Top genes", cls: "genes-table", columns,
      rows: rows.map((g) => [link(`#/genes/${encodeURIComponent(g[0])}`, g[0]), num(g[1]),
        h("span", { class: "bar", style: `width:${Math.max(1, (100 * (typeof g[1] === "number" ? g[1] : 0)) / max)}%` }),
        g[5] ? h("span", {}, int(g[2]), " ", h("span", { class: "flag" }, "low support")) : int(g[2]),
        ...(hasTokens ? [int(g[3])] : []), ...(hasScore ? [num(g[4])] : [])]) })
      : h("p", { class: "muted" }, "No top genes recorded."));
}

const ENR_HEAD = ["database", "term", "p", "q", "odds_ratio", "overlap", "overlap_genes", "set_size", "edge_density", "note"];

function enrichments(name, rows) {
  const byDb = new Map();
  for (const r of rows) { if (!byDb.has(r[0])) byDb.set(r[0], []); byDb.get(r[0]).push(r); }
  const text = toCSV(ENR_HEAD, rows);
  const copyBtn = h("button", { type: "button", onclick: () => copy(text, copyBtn) }, "Copy enrichment table");
  return h("section", { "aria-labelledby": "enr-h" },
    h("h2", { id: "enr-h" }, `Enrichments (${rows.length})`),
    rows.length ? h("div", { class: "actions" }, copyBtn,
      h("button", { type: "button", onclick: () => download(`${name.replace(":", "_")}_enrichments.csv`, text) }, "Download enrichments (CSV)")) : null,
    rows.length ? [...byDb].map(([db, list]) => {
      const density = list.some((r) => r[8] != null);
      return h("div", { class: "db" },
        h("h3", {}, `${db} (${list.length})`),
        table({ caption: `${db} enrichments`, columns: [{ label: "Term" }, { label: "p", num: true, help: ["p", "a p-value"] },
          density ? { label: "Edge density", num: true, help: ["edge_density", "edge density"] } : { label: "q", num: true, help: ["q", "a q-value"] },
          { label: "Odds ratio", num: true, help: ["odds_ratio", "an odds ratio"] }, { label: "Overlap", num: true, help: ["overlap", "overlap"] }, { label: "Genes" }],
        rows: list.sort((a, b) => (a[3] ?? a[8] ?? 1) - (b[3] ?? b[8] ?? 1)).map((r) => [
          r[9] ? h("span", {}, link(`#/terms/${encodeURIComponent(`${r[0]}:${r[1]}`)}`, r[9])) : link(`#/terms/${encodeURIComponent(`${r[0]}:${r[1]}`)}`, r[1]),
          pval(r[2]), r[8] != null ? num(r[8], 2) : pval(r[3]), num(r[4]), int(r[5]), r[6].join(", ") || "—"]) }));
    }) : h("p", { class: "muted" }, "No term passed the atlas' significance threshold."));
}

function celltypes(cts, tops) {
  if (!cts.length && !tops.length) return h("section", {}, h("h2", {}, "Cell types"), h("p", { class: "muted" }, "No cell-type enrichment recorded."));
  const types = cts.filter((c) => c[0] !== "tissue"), tissues = cts.filter((c) => c[0] === "tissue");
  const hasAuc = types.some((c) => c[6] != null), hasFiring = types.some((c) => c[8] != null);
  const columns = [{ label: "Cell type" }, ...(hasAuc ? [{ label: "AUC", num: true, help: ["auc", "AUC"] }] : []),
    { label: "Odds ratio", num: true, help: ["odds_ratio", "an odds ratio"] }, { label: "q", num: true, help: ["q", "a q-value"] },
    ...(hasFiring ? [{ label: "Cells firing", num: true, help: ["n_firing", "cells firing"] }] : []),
    { label: "In top cells", num: true, help: ["n_top", "in top cells"] }];
  return h("section", { "aria-labelledby": "ct-h" },
    h("h2", { id: "ct-h" }, "Cell types"),
    types.length ? [h("p", { class: "muted" }, "Strongest effect first (", hasAuc ? "AUC" : "odds ratio", ")."),
      table({ caption: "Cell-type enrichment", columns, rows: types.map((c) => [link(`#/celltypes/${encodeURIComponent(c[1])}`, c[1]),
        ...(hasAuc ? [num(c[6])] : []), num(c[3]), pval(c[2]),
        ...(hasFiring ? [c[8] != null ? `${int(c[8])} of ${int(c[7])}` : "—"] : []), int(c[4])]) })] : null,
    tissues.length ? [h("h3", {}, "Tissues"), table({ caption: "Tissue enrichment", columns: [{ label: "Tissue" }, { label: "Odds ratio", num: true }, { label: "q", num: true }],
      rows: tissues.map((c) => [c[1], num(c[3]), pval(c[2])]) })] : null,
    tops.length ? [h("h3", {}, "Most active cells"), table({ caption: "Most active cells", columns: [{ label: "Cell type" }, { label: "Tissue" }, { label: "Activation", num: true }],
      rows: tops.map((t) => [t[0], t[1] ?? "—", num(t[2])]) })] : null);
}

const KIND = { cross_layer_pmi: "co-firing (PMI)", decoder_cosine: "decoder cosine" };

function neighbours(rows) {
  if (!rows.length) return h("section", {}, h("h2", {}, "Cross-layer neighbours"), h("p", { class: "muted" }, "No cross-layer edge links this feature."));
  return h("section", { "aria-labelledby": "xl-h" },
    h("h2", { id: "xl-h" }, `Cross-layer neighbours (${rows.length})`),
    table({ caption: "Cross-layer neighbours", columns: [{ label: "Direction" }, { label: "Feature" }, { label: "Label" }, { label: "Kind" },
      { label: "Weight", num: true, help: ["pmi", "an edge weight"] }],
    rows: rows.map((r) => [r[1] === "down" ? "→ downstream" : "← upstream", featureLink(r[2], r[3]), labelOf(r[5]), KIND[r[0]] || r[0], num(r[4])]) }));
}
