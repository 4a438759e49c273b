// #/feature/L/F : one feature's statistics, top genes, enrichments by database, cell types, module, neighbours.
import { h, link, featureLink } from "../lib/dom.js";
import { featureShard, layerIds, labelOf } from "../lib/data.js";
import { int, num, pct } from "../lib/format.js";
import { toCSV, download, copy } from "../lib/export.js";

export async function render(el, layerParam, featureParam) {
  const layer = Number(layerParam), f = Number(featureParam);
  if (!layerIds().includes(layer)) throw new Error(`This atlas has no layer ${layer}.`);
  const shard = await featureShard(layer, f);
  const d = shard.features[String(f)];
  if (!d) throw new Error(`Layer ${layer} has no feature ${f}.`);
  const name = `L${layer}:F${f}`;
  el.append(
    h("p", { class: "muted" }, link(`#/layer/${layer}`, `← Layer ${layer}`), " · ",
      f > 0 ? featureLink(layer, f - 1, "previous") : "previous", " · ", featureLink(layer, f + 1, "next")),
    h("h1", {}, name),
    h("p", { class: "feature-label" }, d.label ? [d.label, h("span", { class: "muted" }, ` (${d.database}${d.q != null ? `, q = ${num(d.q, 2)}` : ""})`)] : h("span", { class: "muted" }, "No enrichment passed: unlabelled.")),
    h("dl", { class: "stats" },
      h("dt", {}, "Status"), h("dd", {}, d.alive ? "alive" : "dead (never fired on the dataset)"),
      h("dt", {}, "Activation frequency"), h("dd", {}, `${pct(d.frequency)} of tokens (${int(d.fire_count)} fires)`),
      h("dt", {}, "Mean activation"), h("dd", {}, num(d.mean_activation)),
      h("dt", {}, "Module"), h("dd", {}, d.module ? [link(`#/modules/${layer}`, `Module ${d.module[0]}`), ` · ${labelOf(d.module[1])} · ${int(d.module[2])} features`] : "none"),
      d.svd_aligned != null ? [h("dt", {}, "SVD-aligned"), h("dd", {}, d.svd_aligned ? "yes" : "no")] : null),
    genes(name, d.genes),
    enrichments(name, d.enrichments),
    celltypes(d.celltypes, d.top_cells),
    neighbours(d.neighbours),
  );
}

function genes(name, rows) {
  const max = Math.max(1e-9, ...rows.map((g) => (typeof g[1] === "number" ? g[1] : 0)));
  const tsv = rows.map((g) => g[0]).join("\n");
  const copyBtn = h("button", { type: "button", onclick: () => copy(tsv, copyBtn) }, "Copy gene list");
  return h("section", { "aria-labelledby": "genes-h" },
    h("h2", { id: "genes-h" }, `Top genes (${rows.length})`),
    h("div", { class: "actions" }, copyBtn,
      h("button", { type: "button", onclick: () => download(`${name.replace(":", "_")}_genes.csv`, toCSV(["rank", "gene", "activation", "fire_count"], rows.map((g, i) => [i + 1, ...g]))) }, "Download genes (CSV)")),
    rows.length ? h("table", { class: "genes-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Gene"), h("th", { class: "num" }, "Activation"), h("th", {}, ""), h("th", { class: "num" }, "Fires"))),
      h("tbody", {}, rows.map((g) => h("tr", {},
        h("td", {}, link(`#/genes/${encodeURIComponent(g[0])}`, g[0])),
        h("td", { class: "num" }, num(g[1])),
        h("td", { style: "width:40%" }, h("span", { class: "bar", style: `width:${Math.max(1, (100 * (g[1] || 0)) / max)}%` })),
        h("td", { class: "num" }, int(g[2])))))) : h("p", { class: "muted" }, "No top genes recorded."));
}

const ENR_HEAD = ["database", "term", "p", "q", "odds_ratio", "overlap", "overlap_genes", "set_size", "edge_density"];

function enrichments(name, rows) {
  const byDb = new Map();
  for (const r of rows) { if (!byDb.has(r[0])) byDb.set(r[0], []); byDb.get(r[0]).push(r); }
  const text = toCSV(ENR_HEAD, rows);
  const copyBtn = h("button", { type: "button", onclick: () => copy(text, copyBtn) }, "Copy enrichment table");
  return h("section", { "aria-labelledby": "enr-h" },
    h("h2", { id: "enr-h" }, `Enrichments (${rows.length})`),
    rows.length ? h("div", { class: "actions" }, copyBtn,
      h("button", { type: "button", onclick: () => download(`${name.replace(":", "_")}_enrichments.csv`, text) }, "Download enrichments (CSV)")) : null,
    rows.length ? [...byDb].map(([db, list]) => h("div", { class: "db" },
      h("h3", {}, `${db} (${list.length})`),
      h("div", { class: "scroll-x" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Term", "p", "q", "Odds ratio", "Overlap", "Genes"].map((c, i) => h("th", { class: i && i < 5 ? "num" : "" }, c)))),
        h("tbody", {}, list.sort((a, b) => (a[3] ?? a[8] ?? 1) - (b[3] ?? b[8] ?? 1)).map((r) => h("tr", {},
          h("td", {}, link(`#/terms/${encodeURIComponent(`${r[0]}:${r[1]}`)}`, r[1])),
          h("td", { class: "num" }, num(r[2], 2)), h("td", { class: "num" }, r[8] != null ? `density ${num(r[8], 2)}` : num(r[3], 2)),
          h("td", { class: "num" }, num(r[4])), h("td", { class: "num" }, int(r[5])),
          h("td", {}, r[6].join(", ")))))))))
      : h("p", { class: "muted" }, "No term passed the atlas' significance threshold."));
}

function celltypes(cts, tops) {
  if (!cts.length && !tops.length) return h("section", {}, h("h2", {}, "Cell types"), h("p", { class: "muted" }, "No cell-type enrichment recorded."));
  return h("section", { "aria-labelledby": "ct-h" },
    h("h2", { id: "ct-h" }, "Cell types"),
    cts.length ? h("div", { class: "scroll-x" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Level", "Name", "q", "Odds ratio", "In top cells"].map((c, i) => h("th", { class: i > 1 ? "num" : "" }, c)))),
      h("tbody", {}, cts.map((c) => h("tr", {}, h("td", {}, c[0] === "cell_type" ? "cell type" : c[0]), h("td", {}, c[1]),
        h("td", { class: "num" }, num(c[2], 2)), h("td", { class: "num" }, num(c[3])), h("td", { class: "num" }, int(c[4]))))))) : null,
    tops.length ? [h("h3", {}, "Most active cells"), h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Cell type"), h("th", {}, "Tissue"), h("th", { class: "num" }, "Activation"))),
      h("tbody", {}, tops.map((t) => h("tr", {}, h("td", {}, t[0]), h("td", {}, t[1] ?? "—"), h("td", { class: "num" }, num(t[2]))))))] : null);
}

function neighbours(rows) {
  if (!rows.length) return null;
  return h("section", { "aria-labelledby": "xl-h" },
    h("h2", { id: "xl-h" }, `Cross-layer neighbours (${rows.length})`),
    h("div", { class: "scroll-x" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Direction", "Feature", "Label", "Weight", "Kind"].map((c, i) => h("th", { class: i === 3 ? "num" : "" }, c)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, h("td", {}, r[1] === "down" ? "→ downstream" : "← upstream"),
        h("td", {}, featureLink(r[2], r[3])), h("td", {}, labelOf(r[5])), h("td", { class: "num" }, num(r[4])), h("td", {}, r[0])))))));
}
