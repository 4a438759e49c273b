// The overview's annotation rate beside its baselines: a chart per layer with every interval, a plain sentence
// whenever the trained SAE annotates fewer features than its untrained dictionary, a table of the same numbers, and
// every measure of null_baseline beside its baseline. Rates, counts and intervals are the atlas' own (table layers,
// null_baseline, manifest totals); the page only compares them to choose its words.
import { h, link, help, table, fold } from "./dom.js";
import { boot, rows } from "./data.js";
import { int, num, pct, pctTick } from "./format.js";
import { lineChart, figure } from "./chart.js";
import { baselineName, BASELINE_ORDER } from "./names.js";
import { PALETTE } from "./map.js";

const ANNOTATION = (r) => r.analysis === "annotation" && r.measure === "any database";
export const interval = (v, lo, hi, f = pct) => (v == null ? "—" : lo == null ? f(v) : `${f(v)} [${f(lo)}, ${f(hi)}]`);
const order = (a, b) => (BASELINE_ORDER.indexOf(a) + 1 || 99) - (BASELINE_ORDER.indexOf(b) + 1 || 99) || (a < b ? -1 : 1);

export function annotationSection(nulls) {
  const layers = boot.layers, t = boot.totals;
  const ann = nulls.filter(ANNOTATION);
  const names = [...new Set(ann.map((r) => r.baseline))].sort(order);
  const at = new Map(ann.map((r) => [`${r.layer}|${r.baseline}`, r]));
  const measured = layers.filter((l) => l.annotated_rate != null);
  const oldNull = layers.some((l) => l.annotated_null_rate != null);
  const series = [{ name: "trained SAE's features", color: "var(--bar2)", values: layers.map((l) => l.annotated_rate ?? null),
    lo: layers.map((l) => l.annotated_rate_lo ?? null), hi: layers.map((l) => l.annotated_rate_hi ?? null) }];
  // The chart holds the baselines compared with every tested feature; those compared with a subset (the most
  // frequent features, as many as their lists: pca, coexpression) are in the table with that subset's share.
  const whole = names.filter((n) => layers.every((l) => { const r = at.get(`${l.layer}|${n}`); return !r || r.observed_n == null || r.observed_n === l.tested; }));
  whole.forEach((n, j) => series.push({ name: baselineName(n), color: j ? PALETTE[(j + 2) % PALETTE.length] : "var(--muted)", dash: "4 3",
    values: layers.map((l) => at.get(`${l.layer}|${n}`)?.expected ?? null), lo: layers.map((l) => at.get(`${l.layer}|${n}`)?.expected_lo ?? null),
    hi: layers.map((l) => at.get(`${l.layer}|${n}`)?.expected_hi ?? null) }));
  if (!names.length && oldNull) series.push({ name: "random gene lists", color: "var(--muted)", dash: "4 3", values: layers.map((l) => l.annotated_null_rate ?? null) });
  const absent = layers.filter((l) => l.annotations_absent);
  return [h("h2", {}, "Annotation rate ", help("annotated_rate", "the annotation rate")),
    h("p", {}, t.annotated_rate != null ? [h("b", {}, `${int(t.annotated)} of ${int(t.tested)} tested features`), ` have an enriched gene-set term: ${interval(t.annotated_rate, t.annotated_rate_lo, t.annotated_rate_hi)} `,
      h("span", { class: "muted" }, "(95% interval in brackets)"), absent.length ? ` over the ${measured.length} layers whose annotation data was published` : "", "."] : "No annotation rate was measured.",
      names.length || oldNull ? null : " No chance baseline was measured for this atlas, so the rate alone does not show that features are biological."),
    absent.length ? absentNote(absent) : null,
    dictionarySentence(ann),
    measured.length ? figure(`Share of tested features with an enriched term, per layer${names.length ? ", beside each baseline" : ""}; bars are 95% intervals`,
      lineChart({ title: "Annotation rate per layer", labels: layers.map((l) => String(l.layer)), series, yTitle: "Share annotated", format: pct, tickFormat: pctTick }),
      names.length ? `Baselines: gene lists made without the trained SAE, tested the same way at the same false discovery rate. Hover a point for its value and interval.${whole.length < names.length ? ` Not drawn: ${names.filter((n) => !whole.includes(n)).map(baselineName).join(" and ")}, compared with the most frequent features only (in the table below).` : ""}` : null) : null,
    names.length ? fold({ title: "Annotation rate beside each baseline", level: "h3", summary: `${names.length} baselines per layer`, body: baselineTable(names, at) }) : null];
}

function absentNote(absent) {
  const pub = absent.filter((l) => l.published_annotated != null);
  return h("p", { class: "notice" }, `Not published: the enrichment files of ${absent.length === 1 ? "layer" : "layers"} ${absent.map((l) => l.layer).join(", ")}. `,
    "Their features keep their published labels, but no test result can be shown and they are left out of every rate. ",
    pub.length ? `The publication's own summary counts ${pub.map((l) => `${int(l.published_annotated)} (layer ${l.layer})`).join(", ")} annotated features.` : "");
}

// Whether the trained SAE annotates fewer features than its untrained dictionaries (random_dictionary, and
// random_dictionary_2 when it ran), layer by layer on the point estimates, and where the 95% intervals separate.
function dictionarySentence(ann) {
  const dict = ann.filter((r) => /^random_dictionary/.test(r.baseline) && r.observed != null && r.expected != null);
  if (!dict.length) return null;
  const layers = [...new Set(dict.map((r) => r.layer))].sort((a, b) => a - b);
  const mine = (l) => dict.filter((r) => r.layer === l);
  const fewer = layers.filter((l) => mine(l).every((r) => r.observed < r.expected));
  const more = layers.filter((l) => mine(l).every((r) => r.observed > r.expected));
  const apart = layers.filter((l) => mine(l).every((r) => r.observed_hi != null && r.expected_lo != null && (r.observed_hi < r.expected_lo || r.observed_lo > r.expected_hi)));
  const list = (ls) => `${ls.length > 1 ? "layers" : "layer"} ${ls.join(", ")}`;
  const plural = new Set(dict.map((r) => r.baseline)).size > 1 ? "dictionaries" : "dictionary";
  let text;
  if (fewer.length === layers.length) text = `In every layer the untrained ${plural} annotate more features than the trained SAE: each SAE's random start, encoding the same activations through the same statistics, gives gene lists that pass the enrichment tests more often than the trained features' lists.`;
  else if (more.length === layers.length) text = `In every layer the trained SAE annotates more features than its untrained ${plural}.`;
  else text = `${fewer.length ? `In ${list(fewer)} the untrained ${plural} annotate more features than the trained SAE` : "No layer has fewer annotated trained features than untrained ones"}${more.length ? `; in ${list(more)} the trained SAE annotates more` : ""}.`;
  const pooled = (boot.totals.baselines || {}).random_dictionary;
  const sep = pooled && (pooled.observed_hi < pooled.lo || pooled.observed_lo > pooled.hi);
  const detail = [apart.length ? ` The 95% intervals separate in ${list(apart)}${apart.length < layers.length ? " and overlap elsewhere" : ""}.` : " In each layer the 95% intervals overlap.",
    pooled ? ` Pooled over layers: ${interval(pooled.observed, pooled.observed_lo, pooled.observed_hi)} of the trained features against ${interval(pooled.rate, pooled.lo, pooled.hi)} of the untrained dictionary's directions${sep ? ", intervals apart" : ", intervals overlapping"}.` : ""];
  return h("p", { class: `finding-text${fewer.length ? " warn-box" : ""}` }, h("b", {}, "Trained vs untrained dictionary. "), text, detail, " ", help("random_dictionary", "the untrained dictionary baseline"));
}

function baselineTable(names, at) {
  const note = (n) => ([...at.values()].find((r) => r.baseline === n) || {}).note || "";
  return [h("p", { class: "muted small" }, "Each cell: the baseline's share of annotated gene lists [95% interval]. Where a baseline is compared with a subset of the features (the most frequent ones, as many as its lists), the features' own share in that comparison follows “vs”."),
    table({ caption: "Annotation rate of the trained SAE and of each baseline, per layer", cls: "baselines", scroll: true,
      columns: [{ label: "Layer" }, { label: "Trained SAE", num: true }, ...names.map((n) => ({ label: baselineName(n), num: true }))],
      rows: boot.layers.map((l) => [link(`#/layer/${l.layer}`, `Layer ${l.layer}`),
        l.annotations_absent ? h("span", { class: "absent" }, "not published") : interval(l.annotated_rate, l.annotated_rate_lo, l.annotated_rate_hi),
        ...names.map((n) => {
          const r = at.get(`${l.layer}|${n}`);
          if (!r) return "—";
          const same = r.observed_n == null || r.observed_n === l.tested;
          return h("span", { title: note(n) }, interval(r.expected, r.expected_lo, r.expected_hi), same ? "" : ` vs ${pct(r.observed)}`);
        })]) })];
}

// Every measure beside each of its baselines: one row per analysis, measure and baseline, one cell per layer.
const share = (analysis, measure) => analysis === "annotation" || analysis === "svd" || /share|rate/.test(measure);
export function nullTable(nulls) {
  if (!nulls.length) return null;
  const layers = [...new Set(nulls.map((r) => r.layer))].sort((a, b) => a - b);
  const keys = [...new Map(nulls.map((r) => [`${r.analysis}|${r.measure}|${r.baseline}`, r])).values()];
  const find = new Map(nulls.map((r) => [`${r.layer}|${r.analysis}|${r.measure}|${r.baseline}`, r]));
  const cell = (v, s) => (v == null ? "—" : s ? pct(v) : Number.isInteger(v) ? int(v) : num(v));
  return fold({ title: "Every measure beside its baseline", summary: `${keys.length} measures`, open: false, body: [
    h("p", {}, "Each cell reads “observed / baseline” for one layer, the baseline's interval in brackets where it has one. The baseline is the same measure where no biology should be found (named in the Baseline column; a cell's tooltip says how it is made). An observed value close to its baseline says the atlas finds about as much there as chance would. ", help("baseline", "a null baseline")),
    table({ caption: "Observed values beside their nulls", cls: "nulls", scroll: true,
      columns: [{ label: "Measure" }, { label: "Baseline" }, ...layers.map((l) => ({ label: `Layer ${l}`, num: true }))],
      rows: keys.map(({ analysis, measure, baseline }) => [`${analysis.replace(/_/g, " ")}: ${measure.replace(/_/g, " ")}`, baselineName(baseline),
        ...layers.map((l) => {
          const r = find.get(`${l}|${analysis}|${measure}|${baseline}`);
          const s = share(analysis, measure);
          return r ? h("span", { title: r.note || "" }, `${cell(r.observed, s)} / ${cell(r.expected, s)}${r.expected_lo != null ? ` [${cell(r.expected_lo, s)}, ${cell(r.expected_hi, s)}]` : ""}`) : "—";
        })]) })] });
}

export const nullRows = () => rows(boot.nulls);
