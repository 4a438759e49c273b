// #/tf and #/tf/SYMBOL : perturbed genes. The list (every perturbation of every dataset, sortable and filtered by
// name, TF flag and verdict) and one gene's page: per dataset its knockdown, target enrichment of the responding
// features beside the expression ceiling, the verdict, and the responding features. Data goes in as text.
import { h, link, featureLink, help, table, append } from "../lib/dom.js";
import { boot, load, rows, labelOf } from "../lib/data.js";
import { int, num, pct, pval, plural } from "../lib/format.js";
import { vtable } from "../lib/vtable.js";
import { tfEntry, tfHref, verdictText } from "../lib/tfdata.js";

const untested = (what) => h("p", { class: "notice not-tested", role: "status" }, what);
const NO_DATA = "Not tested: this atlas has no perturbation data (atlas perturb adds it from a Perturb-seq dataset).";

export async function render(el, symbol) {
  if (symbol) return gene(el, symbol);
  append(el, h("h1", {}, "Perturbed genes"));
  if (!(boot.tf_keys || []).length) return append(el, untested(NO_DATA));
  const index = await load("tf/index.json");
  const perts = rows(index.rows).map((r) => ({ ...r, dataset: index.datasets[r.dataset] }));
  const many = index.datasets.length > 1;
  const columns = [
    { key: "name", label: "Gene", width: "minmax(6rem, 1fr)", text: (r) => r.perturbation, tip: (r) => r.perturbation },
    ...(many ? [{ key: "ds", label: "Dataset", width: "minmax(6rem, 1fr)", minor: true, text: (r) => r.dataset, tip: (r) => r.dataset }] : []),
    { key: "tf", label: "TF", width: "3rem", text: (r) => (r.is_tf == null ? "—" : r.is_tf ? "yes" : "no") },
    { key: "verdict", label: "Verdict", width: "7.4rem", text: (r) => r.verdict || "—", sort: (r) => r.verdict || null },
    { key: "resp", label: "Responding", width: "6.4rem", num: true, text: (r) => int(r.n_responding), sort: (r) => r.n_responding },
    { key: "q", label: "q", width: "4.6rem", num: true, minor: true, text: (r) => pval(r.q), sort: (r) => r.q },
    { key: "cq", label: "Ceiling q", width: "5.4rem", num: true, minor: true, text: (r) => pval(r.ceiling_q), sort: (r) => r.ceiling_q },
    { key: "kd", label: "Knockdown", width: "6rem", num: true, minor: true, text: (r) => pct(r.kd_efficiency), sort: (r) => r.kd_efficiency },
  ];
  const view = vtable({ columns, rows: perts, label: "Perturbed genes", height: Math.min(480, 30 * perts.length + 4), href: (r) => tfHref(r.perturbation), sort: { key: "name", dir: 1 } });
  const name = h("input", { type: "search", placeholder: "Filter genes", "aria-label": "Filter genes by name", autocomplete: "off", spellcheck: "false" });
  const tfOnly = h("input", { type: "checkbox", id: "tf-only" });
  const verdicts = [...new Set(perts.map((r) => r.verdict).filter(Boolean))].sort();
  const pick = h("select", { "aria-label": "Verdict" }, h("option", { value: "" }, "any verdict"), verdicts.map((v) => h("option", { value: v }, v)));
  const count = h("span", { class: "muted", "aria-live": "polite" });
  const apply = () => {
    const q = name.value.trim().toUpperCase();
    const kept = perts.filter((r) => r.perturbation.toUpperCase().includes(q) && (!tfOnly.checked || r.is_tf === 1) && (!pick.value || r.verdict === pick.value));
    view.setRows(kept);
    count.textContent = `${plural(kept.length, "perturbation")} of ${int(perts.length)}`;
  };
  for (const c of [name, tfOnly, pick]) c.addEventListener(c === name ? "input" : "change", apply);
  apply();
  append(el, h("p", { class: "muted" }, `Every perturbation of ${plural(index.datasets.length, "dataset")}: ${index.datasets.join("; ")}. A gene opens its page.`),
    h("div", { class: "toolbar" }, name, h("label", { for: "tf-only" }, tfOnly, " transcription factors only"), pick, count), view.el);
}

async function gene(el, symbol) {
  const entry = (boot.tf_keys || []).length ? await tfEntry(symbol) : null;
  append(el, h("p", { class: "muted" }, link("#/tf", "← Perturbed genes")), h("h1", {}, entry ? entry.name : symbol));
  if (!entry) {
    return append(el, untested((boot.tf_keys || []).length ? `Not tested: ${symbol} was not perturbed in this atlas' perturbation data.` : NO_DATA),
      h("p", {}, link(`#/genes/${encodeURIComponent(symbol)}`, `Features with ${symbol} among their top genes`), "."));
  }
  append(el, h("p", {}, link(`#/genes/${encodeURIComponent(entry.name)}`, `Features with ${entry.name} among their top genes`), "."),
    entry.recs.map((r) => dataset(entry.name, r)));
}

// A non-TF is tested, as a negative control, against the targets of the TF nearest to it (tf_specificity.target_set).
const negative = (name, r) => Boolean(r.target_set) && r.target_set.toUpperCase() !== name.toUpperCase();

function dataset(name, r) {
  return h("section", { class: "tf-dataset" },
    h("h2", {}, r.dataset), r.published ? h("p", { class: "notice" }, "Published values: top-5 effects per perturbation with no interval, p-value or test; the counts below are the published ones.") : null,
    facts(name, r),
    r.published ? null : table({ caption: "Target enrichment against the expression ceiling", cls: "tf-enrichment",
      columns: [{ label: "Genes scored by" }, { label: "Odds ratio", num: true, help: ["odds_ratio", "an odds ratio"] }, { label: "q", num: true, help: ["q", "a q-value"] }],
      rows: [["the responding features' loadings", num(r.odds), pval(r.q)], [["expression alone (ceiling) ", help("ceiling", "the expression ceiling")], num(r.ceiling_odds), pval(r.ceiling_q)]] }),
    h("p", { class: "verdict" }, h("b", {}, "Verdict "), help("tf_verdict", "a TF verdict"), " ", verdictText(r.verdict, r.alpha, negative(name, r) ? r.target_set : null)),
    features(name, r));
}

// The record's numbers; those the data lacks (a published file has no cell counts) are named once, not dashed.
function facts(name, r) {
  const yes = (v) => (v == null ? "not recorded" : v ? "yes" : "no");
  const items = [
    ["Transcription factor", null, r.is_tf, yes(r.is_tf)],
    ["Perturbed cells", null, r.n_cells, int(r.n_cells)],
    ["Knockdown efficiency", ["knockdown", "knockdown efficiency"], r.kd_efficiency, pct(r.kd_efficiency)],
    ["DE genes", null, r.n_de, int(r.n_de)],
    negative(name, r) ? ["Targets tested (negative control)", null, r.n_targets, `${int(r.n_targets)} of ${r.target_set}`] : ["Curated targets", null, r.n_targets, int(r.n_targets)],
    ["Responding features", null, r.n_responding ?? r.n_listed, int(r.n_responding ?? r.n_listed)],
    ["Specific features", null, r.n_specific, int(r.n_specific)],
  ];
  const have = items.filter(([, , v]) => v != null), lack = items.filter(([k, , v]) => v == null && k !== "Specific features");
  return [h("dl", { class: "stats" }, have.map(([k, term, , text]) => [h("dt", {}, k, term ? [" ", help(...term)] : null), h("dd", {}, text)])),
    lack.length ? h("p", { class: "muted small" }, `Not in the data of this dataset: ${lack.map(([k]) => k.toLowerCase()).join(", ")}.`) : null];
}

function features(name, r) {
  const feats = rows(r.features);
  if (!feats.length) return h("p", { class: "muted" }, `No feature responds to the knockdown of ${name}${r.alpha != null ? ` at q < ${r.alpha}` : ""}.`);
  return [h("h3", {}, "Responding features"),
    feats.length < r.n_listed ? h("p", { class: "muted" }, `The ${int(feats.length)} strongest of ${int(r.n_listed)}.`) : null,
    r.published ? h("p", { class: "muted small" }, "The published file gives each feature's effect size only: no interval, q-value or cell counts, so those columns are left out.") : null,
    table({ caption: `Features that respond to the knockdown of ${name}`, cls: "tf-features",
      columns: [{ label: "Feature" }, { label: "Effect", num: true }, { label: "Interval" }, { label: "q", num: true, help: ["q", "a q-value"] }, { label: "Cells (pert. / ctrl.)", num: true }],
      rows: feats.map((f) => [featureLink(f.layer, f.feature, null, labelOf(f.label)), num(f.effect), f.ci_lo != null ? `[${num(f.ci_lo)}, ${num(f.ci_hi)}]` : "—", pval(f.q),
        f.n_pert != null ? `${int(f.n_pert)} / ${int(f.n_ctrl)}` : "—"]) })];
}
