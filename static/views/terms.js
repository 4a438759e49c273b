// #/terms and #/terms/DB:TERM : search the enriched terms (words match from their start: "T cell" never
// suggests "Fat Cell"), list the features a term annotates, and chart them per layer.
import { h, featureLink, help, fill, append } from "../lib/dom.js";
import { boot, load, rows, prefetch, labelOf } from "../lib/data.js";
import { int, num, pval, plural } from "../lib/format.js";
import { vtable } from "../lib/vtable.js";
import { searchBox } from "../lib/search.js";
import { barChart, figure } from "../lib/chart.js";
import { dbName } from "../lib/names.js";

const COLUMNS = [
  { key: "layer", label: "Layer", width: "3.6rem", num: true, text: (r) => r.layer },
  { key: "feature", label: "Feature", width: "4.6rem", num: true, text: (r) => `F${r.feature}`, sort: (r) => r.feature },
  { key: "q", label: "q", width: "5.4rem", num: true, text: (r) => (r.edge_density != null ? `density ${num(r.edge_density, 2)}` : pval(r.q)), sort: (r) => r.q ?? r.edge_density },
  { key: "odds_ratio", label: "Odds ratio", width: "5.4rem", num: true, minor: true, text: (r) => num(r.odds_ratio), sort: (r) => r.odds_ratio },
  { key: "overlap", label: "Overlap", width: "4.4rem", num: true, text: (r) => int(r.overlap), sort: (r) => r.overlap },
  { key: "label", label: "Feature label", width: "minmax(6rem, 1fr)", minor: true, text: (r) => labelOf(r.label), tip: (r) => r.label, sort: (r) => r.label || null },
];

let index = null; // [{term, database, n_features, note}], a term's id being its place; loaded on first use
const terms = () => (index ||= load("terms/index.json").then(rows));
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

async function suggest(q) {
  const words = q.trim().split(/\s+/).map(escape).join("\\s+");
  const re = new RegExp(`(^|[^\\p{L}\\p{N}])${words}`, "iu"); // from the start of a word
  const hits = [];
  (await terms()).forEach((t, id) => {
    const text = t.note || t.term;
    const m = re.exec(text);
    if (m) hits.push({ at: m.index, term: t.term, db: t.database, n: t.n_features, id, text });
  });
  hits.sort((a, b) => (b.at === 0) - (a.at === 0) || b.n - a.n || (a.term < b.term ? -1 : 1));
  return hits.slice(0, 12).map((t) => ({ value: `${t.db}:${t.term}`, text: t.text, note: `${dbName(t.db)} · ${plural(t.n, "feature")}`, id: t.id }));
}

async function warm(value) {
  const all = await terms();
  const cut = value.indexOf(":");
  const id = all.findIndex((t) => t.database === value.slice(0, cut) && t.term === value.slice(cut + 1));
  if (id >= 0) prefetch(`terms/p/${Math.floor(id / boot.term_bucket)}.json`);
}

export async function render(el, param) {
  const box = searchBox({ id: "term-search", label: "Search an ontology term", placeholder: "Term, e.g. apoptosis", suggest,
    pick: (v) => (location.hash = `#/terms/${encodeURIComponent(v)}`), hover: warm });
  box.input.addEventListener("focus", terms, { once: true }); // start the index download early
  const results = h("section", { class: "results", "aria-live": "polite" });
  append(el, h("h1", {}, "Term search"),
    h("p", { class: "muted" }, "Terms of every gene-set database that annotate at least one feature. Words match from their start."),
    box.input, box.list, results);

  async function show(value) {
    if (!value) return fill(results);
    const cut = value.indexOf(":");
    const db = value.slice(0, cut), term = value.slice(cut + 1);
    box.clear();
    const all = await terms();
    const id = all.findIndex((t) => t.term === term && t.database === db);
    if (id < 0) return fill(results, h("p", { class: "warn" }, `No feature is annotated with “${term}” (${db || "no database given"}).`));
    const note = all[id].note;
    const shard = await load(`terms/p/${Math.floor(id / boot.term_bucket)}.json`);
    const feats = rows(shard[String(id)]).map((r) => ({ ...r, label: (shard.labels || [])[r.label] }));
    const table = vtable({ columns: COLUMNS, rows: feats, label: `Features annotated with ${term}`, height: Math.min(480, 30 * feats.length + 4),
      href: (r) => `#/feature/${r.layer}/${r.feature}`, sort: { key: "q", dir: 1 } });
    const best = feats.reduce((a, b) => ((b.q ?? 1) < (a.q ?? 1) ? b : a));
    const perLayer = boot.layers.map((l) => feats.filter((r) => r.layer === l.layer).length);
    fill(results, h("h2", {}, note || term),
      note ? h("p", { class: "notice" }, `Published as “${term}”: a placeholder of the predecessor, not a gene set. `, help("edge_density", "edge density")) : null,
      h("p", { class: "summary" }, `${dbName(db)}: annotates ${plural(feats.length, "feature")}. Strongest: `, featureLink(best.layer, best.feature, null, best.label || null), "."),
      figure(`Features annotated with this ${dbName(db)} term, per layer`,
        barChart({ title: `Features per layer for ${term}`, labels: boot.layers.map((l) => String(l.layer)), format: int, integer: true, yTitle: "Features",
          series: [{ name: dbName(db), color: "var(--bar)", values: boot.layers.map((l, i) => (l.annotations_absent ? null : perLayer[i])) }] }),
        boot.layers.some((l) => l.annotations_absent) ? `No bar for ${boot.layers.filter((l) => l.annotations_absent).map((l) => l.layer).join(", ")}: the annotation data of those layers was not published.` : null),
      table.el);
  }
  await show(param);
  if (!param) box.input.dataset.autofocus = "";
  return { update: (v) => show(v) };
}
