// #/terms and #/terms/DB:TERM : search the enriched terms of every database, list the features they annotate.
import { h, featureLink } from "../lib/dom.js";
import { boot, load } from "../lib/data.js";
import { int, num } from "../lib/format.js";
import { vtable } from "../lib/vtable.js";
import { searchBox } from "../lib/search.js";

const COLUMNS = [
  { key: "layer", label: "Layer", width: "4rem", num: true, text: (r) => r.layer },
  { key: "f", label: "Feature", width: "5rem", num: true, text: (r) => `F${r.f}`, sort: (r) => r.f },
  { key: "q", label: "q", width: "6rem", num: true, text: (r) => num(r.q, 2), sort: (r) => r.q },
  { key: "or", label: "Odds ratio", width: "6rem", num: true, text: (r) => num(r.or), sort: (r) => r.or },
  { key: "ov", label: "Overlap", width: "5rem", num: true, text: (r) => int(r.ov), sort: (r) => r.ov },
];

let index = null; // [[term, db, nFeatures]], loaded on first use
const terms = () => (index ||= load("terms/index.json"));

async function suggest(q) {
  const Q = q.toLowerCase();
  const hits = [];
  for (const [term, db, n] of await terms()) {
    const at = term.toLowerCase().indexOf(Q);
    if (at >= 0) hits.push({ at, term, db, n });
  }
  hits.sort((a, b) => (b.at === 0) - (a.at === 0) || b.n - a.n || (a.term < b.term ? -1 : 1));
  return hits.slice(0, 12).map((t) => ({ value: `${t.db}:${t.term}`, text: t.term, note: `${t.db} · ${t.n} feature${t.n === 1 ? "" : "s"}` }));
}

export async function render(el, param) {
  const box = searchBox({ id: "term-search", label: "Search an ontology term", placeholder: "Term, e.g. apoptosis", suggest,
    pick: (v) => (location.hash = `#/terms/${encodeURIComponent(v)}`) });
  box.input.addEventListener("focus", terms, { once: true }); // start the index download early
  const results = h("section", { class: "results", "aria-live": "polite" });
  el.append(h("h1", {}, "Term search"),
    h("p", { class: "muted" }, "Terms of every gene-set database that annotate at least one feature."),
    box.input, box.list, results);

  async function show(value) {
    if (!value) return results.replaceChildren();
    const cut = value.indexOf(":");
    const db = value.slice(0, cut), term = value.slice(cut + 1);
    box.clear();
    const all = await terms();
    const id = all.findIndex((t) => t[0] === term && t[1] === db);
    if (id < 0) return results.replaceChildren(h("p", { class: "warn" }, `No feature is annotated with “${term}” (${db}).`));
    const shard = await load(`terms/p/${Math.floor(id / boot.term_bucket)}.json`);
    const rows = shard[String(id)].map(([layer, f, q, or, ov]) => ({ layer, f, q, or, ov }));
    const table = vtable({ columns: COLUMNS, rows, label: `Features annotated with ${term}`, height: Math.min(480, 30 * rows.length + 4),
      href: (r) => `#/feature/${r.layer}/${r.f}`, sort: { key: "q", dir: 1 } });
    const best = rows.reduce((a, b) => ((b.q ?? 1) < (a.q ?? 1) ? b : a));
    results.replaceChildren(h("h2", {}, term), h("p", { class: "summary" }, `${db}: annotates ${int(rows.length)} feature${rows.length === 1 ? "" : "s"}. Strongest: `,
      featureLink(best.layer, best.f), "."), table.el);
  }
  await show(param);
  if (!param) box.input.dataset.autofocus = "";
  return { update: (v) => show(v) };
}
