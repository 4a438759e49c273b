// #/genes and #/genes/SYMBOL : gene search over every top gene of every feature.
import { h } from "../lib/dom.js";
import { boot, load, shardKey, labelOf } from "../lib/data.js";
import { int, num } from "../lib/format.js";
import { vtable } from "../lib/vtable.js";
import { searchBox } from "../lib/search.js";

const COLUMNS = [
  { key: "layer", label: "Layer", width: "4rem", num: true, text: (r) => r.layer },
  { key: "f", label: "Feature", width: "5rem", num: true, text: (r) => `F${r.f}`, sort: (r) => r.f },
  { key: "rank", label: "Rank", width: "4rem", num: true, text: (r) => r.rank },
  { key: "act", label: "Activation", width: "6rem", num: true, text: (r) => num(r.act), sort: (r) => r.act },
  { key: "label", label: "Label", width: "minmax(8rem, 1fr)", text: (r) => labelOf(r.label), title: (r) => r.label, sort: (r) => r.label || null },
];

const nameList = async (q) => (boot.gene_keys.includes(shardKey(q[0])) ? load(`genes/n/${shardKey(q[0])}.json`) : []);

async function names(q) {
  const list = await nameList(q);
  const Q = q.toUpperCase();
  const hits = list.filter(([name]) => name.toUpperCase().startsWith(Q));
  hits.sort((a, b) => (b[0].toUpperCase() === Q) - (a[0].toUpperCase() === Q) || a[0].length - b[0].length || (a[0] < b[0] ? -1 : 1));
  return hits.map(([name, n]) => ({ value: name, text: name, note: `${n} feature${n === 1 ? "" : "s"}` }));
}

export async function render(el, symbol) {
  const box = searchBox({ id: "gene-search", label: "Search a gene symbol", placeholder: "Gene symbol, e.g. CD74", suggest: names,
    pick: (name) => (location.hash = `#/genes/${encodeURIComponent(name)}`) });
  const results = h("section", { class: "results", "aria-live": "polite" });
  el.append(h("h1", {}, "Gene search"),
    h("p", { class: "muted" }, `Every feature that has the gene among its top genes, over ${int(boot.totals.layers)} layers.`),
    box.input, box.list, results);

  async function show(sym) {
    if (!sym) return results.replaceChildren();
    if (box.input.value.trim() !== sym) box.input.value = sym;
    box.clear();
    // [name, count, own file?]: a gene that tops very many features has a postings file of its own.
    const entry = (await nameList(sym)).find((e) => e[0] === sym);
    const shard = entry ? await load(`genes/p/${entry[2] || shardKey(sym[0]) + shardKey(sym[1])}.json`) : null;
    const rows = shard && shard.genes[sym];
    if (!rows) return results.replaceChildren(h("p", { class: "warn" }, `No feature has ${sym} among its top genes.`));
    const data = rows.map(([layer, f, rank, act, lb]) => ({ layer, f, rank, act, label: shard.labels[lb] }));
    const layers = new Set(data.map((r) => r.layer)).size;
    const table = vtable({ columns: COLUMNS, rows: data, label: `Features with ${sym} among their top genes`, height: Math.min(480, 30 * data.length + 4),
      href: (r) => `#/feature/${r.layer}/${r.f}`, sort: { key: "layer", dir: 1 } });
    results.replaceChildren(h("h2", {}, sym),
      h("p", { class: "summary" }, `${sym} is a top gene of ${int(data.length)} feature${data.length === 1 ? "" : "s"} in ${layers} layer${layers === 1 ? "" : "s"}.`),
      table.el);
  }
  await show(symbol);
  if (!symbol) box.input.dataset.autofocus = "";
  return { update: (sym) => show(sym) };
}
