// #/genes and #/genes/SYMBOL : gene search over every top gene of every feature (case-insensitive), a layer x
// rank chart, the features table and the gene's expression on the cell map.
import { h, fill, append } from "../lib/dom.js";
import { boot, load, rows, nameKey, labelOf, prefetch } from "../lib/data.js";
import { int, num, plural } from "../lib/format.js";
import { vtable } from "../lib/vtable.js";
import { searchBox } from "../lib/search.js";
import { dotChart, figure } from "../lib/chart.js";
import { cellMapSection } from "../lib/cells.js";
import { tfEntry, tfHref } from "../lib/tfdata.js";

const COLUMNS = [
  { key: "layer", label: "Layer", width: "3.6rem", num: true, text: (r) => r.layer },
  { key: "feature", label: "Feature", width: "4.6rem", num: true, text: (r) => `F${r.feature}`, sort: (r) => r.feature },
  { key: "rank", label: "Rank", width: "3.6rem", num: true, text: (r) => r.rank },
  { key: "activation", label: "Activation", width: "5.6rem", num: true, text: (r) => num(r.activation), sort: (r) => r.activation },
  { key: "label", label: "Label", width: "minmax(6rem, 1fr)", text: (r) => labelOf(r.label), tip: (r) => r.label, sort: (r) => r.label || null },
];

// The genes whose name starts like q's: [{gene, n_features, file}] (file: a gene's own postings file, if it has one).
const nameList = async (q) => (boot.gene_keys.includes(nameKey(q, 1)) ? rows(await load(`genes/n/${nameKey(q, 1)}.json`)) : []);
const postingsPath = (entry) => `genes/p/${entry.file || nameKey(entry.gene)}.json`;

async function names(q) {
  const list = await nameList(q);
  const Q = q.toUpperCase();
  const hits = list.filter((e) => e.gene.toUpperCase().startsWith(Q));
  hits.sort((a, b) => (b.gene.toUpperCase() === Q) - (a.gene.toUpperCase() === Q) || a.gene.length - b.gene.length || (a.gene < b.gene ? -1 : 1));
  return hits.map((e) => ({ value: e.gene, text: e.gene, note: plural(e.n_features, "feature") }));
}

// A symbol typed or linked in any case finds the gene: an exact match first, else the one case-insensitive match.
async function findEntry(sym) {
  const list = await nameList(sym);
  return list.find((e) => e.gene === sym) || list.find((e) => e.gene.toUpperCase() === sym.toUpperCase());
}

// Measured both ways (bench/README.md): fetching the other name lists right after the first suggestions keeps
// later keystrokes instant; waiting for the pick's postings first made picks quicker but keystrokes slower.
let warmed = false;
async function warm(sym) {
  if (!warmed) { // first suggestions shown: fetch the other (small) name lists while the reader is idle
    warmed = true;
    const idle = window.requestIdleCallback || ((fn) => setTimeout(fn, 200));
    idle(() => boot.gene_keys.forEach((k) => prefetch(`genes/n/${k}.json`)));
  }
  const e = await findEntry(sym);
  if (e) prefetch(postingsPath(e));
}

export async function render(el, symbol) {
  const box = searchBox({ id: "gene-search", label: "Search a gene symbol", placeholder: "Gene symbol, e.g. CD74", suggest: names,
    pick: (name) => (location.hash = `#/genes/${encodeURIComponent(name)}`), hover: (name) => warm(name) });
  const results = h("section", { class: "results", "aria-live": "polite" });
  append(el, h("h1", {}, "Gene search"),
    h("p", { class: "muted" }, `Every feature that has the gene among its top genes, over ${plural(boot.totals.layers, "layer")}. Case does not matter.`),
    box.input, box.list, results);

  async function show(sym) {
    if (!sym) return fill(results);
    box.clear();
    const perturbed = tfEntry(sym).catch(() => null); // a perturbed gene links to its page; asked for in parallel
    const entry = await findEntry(sym);
    const shard = entry ? await load(postingsPath(entry)) : null;
    const postings = shard && shard.genes[entry.gene];
    if (box.input.value.trim() !== sym) box.input.value = entry ? entry.gene : sym;
    const pert = pertNote(await perturbed);
    if (!postings) return fill(results, h("p", { class: "warn" }, `No feature has ${sym} among its top genes.`), pert);
    const gene = entry.gene;
    const data = rows(postings).map((p) => ({ ...p, label: shard.labels[p.label] }));
    const layers = new Set(data.map((r) => r.layer)).size;
    const table = vtable({ columns: COLUMNS, rows: data, label: `Features with ${gene} among their top genes`, height: Math.min(480, 30 * data.length + 4),
      href: (r) => `#/feature/${r.layer}/${r.feature}`, sort: { key: "layer", dir: 1 } });
    const ids = boot.layers.map((l) => l.layer);
    const maxRank = Math.max(5, ...data.map((r) => r.rank));
    fill(results, h("h2", {}, gene),
      h("p", { class: "summary" }, `${gene} is a top gene of ${plural(data.length, "feature")} in ${plural(layers, "layer")}.`), pert,
      figure(`Where ${gene} ranks among each feature's top genes (1 = strongest); a dot opens its feature`,
        dotChart({ title: `Rank of ${gene} by layer`, labels: ids.map(String), xTitle: "Layer", yTitle: "Rank", yMax: maxRank,
          points: data.slice(0, 600).map((r) => ({ x: ids.indexOf(r.layer), y: r.rank, text: `L${r.layer}:F${r.feature}, rank ${r.rank}: ${labelOf(r.label)}`, r })),
          onPick: (p) => (location.hash = `#/feature/${p.r.layer}/${p.r.feature}`) })),
      table.el,
      cellMapSection({ heading: `Expression of ${gene} on the cell map`, what: "expression",
        source: boot.has_cells && load(`cellexpr/${nameKey(gene)}.json`).then((s) => s[gene]) }));
  }
  await show(symbol);
  if (!symbol) box.input.dataset.autofocus = "";
  return { update: (sym) => show(sym) };
}

// "GATA1 was perturbed in DATASET (verdict)": a link to the gene's perturbation page.
function pertNote(e) {
  if (!e) return null;
  const what = e.recs.map((r) => `${r.dataset}${r.verdict ? ` (${r.verdict})` : ""}`).join("; ");
  return h("p", { class: "notice perturbed" }, `${e.name} was perturbed in ${what}: `, h("a", { href: tfHref(e.name) }, "its perturbation page"), ".");
}
