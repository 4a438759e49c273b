// #/about : methods and provenance, generated from the manifest (model, SAE, dataset, parameters, notes).
import { h, link, table, fold, append } from "../lib/dom.js";
import { boot } from "../lib/data.js";
import { int, num } from "../lib/format.js";
import { dbName } from "../lib/names.js";

// A parameter's value as text: numbers in the site's format (0.6931471805599453 reads 0.693), lists joined.
const text = (v) => (v == null || v === "" ? "—" : Array.isArray(v) ? v.map(text).join(", ") : typeof v === "number" ? (Number.isInteger(v) ? int(v) : num(v, 4))
  : typeof v === "object" ? JSON.stringify(v) : String(v));

export function render(el) {
  const m = boot.model || {}, d = boot.dataset || {}, s = boot.sae || {}, t = boot.totals;
  const widths = [...new Set(boot.layers.map((l) => l.n_features))];
  const perLayer = widths.length === 1 ? `${int(widths[0])} features per layer` : `${int(Math.min(...widths))}–${int(Math.max(...widths))} features per layer`;
  const k = (boot.parameters.train || {}).k ?? s.k;
  const rows = [
    ["Model", [m.name || m.family, m.name && m.family && m.name.toLowerCase() !== m.family ? `(${m.family})` : null, m.width ? `width ${int(m.width)}` : null].filter(Boolean).join(" ") || "not recorded"],
    ["Layers", `${int(t.layers)} (${boot.layers.map((l) => l.layer).join(", ")})`],
    ["SAE", [s.kind ? (s.kind === "topk" ? "TopK SAE" : s.kind) : "kind not recorded", k != null ? `k = ${k}` : null, `${perLayer}, ${int(t.n_features)} in all`].filter(Boolean).join(" · ")],
    s.note ? ["SAE record", s.note] : null,
    ["SAEs from", s.source || "not recorded"],
    ["Dataset", [d.name, d.cells != null ? `${int(d.cells)} cells` : null, d.tokens != null ? `${int(d.tokens)} gene tokens` : null].filter(Boolean).join(" · ") || "not recorded"],
    d.heldout_cells != null ? ["Held-out cells", `${int(d.heldout_cells)}${d.heldout_source && d.heldout_source.kind ? ` (${d.heldout_source.kind})` : ""}`] : null,
    ["Tissues", text(d.tissues)],
    ["Cell map", d.cell_map ? text(d.cell_map.embedding) : "none"],
  ].filter(Boolean);
  const params = flatten(boot.parameters || {});
  append(el, h("h1", {}, "About this atlas"),
    h("p", {}, boot.title, boot.description ? [". ", boot.description] : ""),
    h("dl", { class: "stats" }, rows.map(([key, v]) => [h("dt", {}, key), h("dd", {}, v)])),
    h("h2", {}, "Gene-set databases"),
    boot.genesets.length ? h("ul", {}, boot.genesets.map((g) => h("li", {}, dbName(g.name), h("span", { class: "muted" },
      [g.name !== dbName(g.name) ? ` (${g.name})` : "", g.version ? ` · version ${g.version}` : "", g.terms != null ? ` · ${int(g.terms)} terms` : "", g.edges != null ? ` · ${int(g.edges)} edges` : "",
        g.enrichments != null ? ` · ${int(g.enrichments)} enrichments` : ""].join(""))))) : h("p", { class: "muted" }, "None recorded."),
    h("h2", {}, "Notes on the statistics"),
    boot.notes.length ? h("ul", {}, boot.notes.map((n) => h("li", {}, n))) : h("p", { class: "muted" }, "None."),
    fold({ title: "Parameters", summary: params.length ? `${params.length} settings of the build` : "none recorded", open: false,
      body: params.length ? table({ caption: "Parameters of the build", columns: [{ label: "Parameter" }, { label: "Value" }], rows: params })
        : h("p", { class: "muted" }, "No parameters recorded (an imported atlas keeps only what was published).") }),
    boot.source && boot.source.kind ? fold({ title: "Import", summary: `${boot.source.skipped.length} notes on what was not imported`, open: false, body: [
      h("p", {}, `Imported from the predecessor's ${boot.source.kind} files. What was not imported:`),
      h("ul", {}, boot.source.skipped.map((x) => h("li", { class: "muted" }, x)))] }) : null,
    h("h2", {}, "Downloads"),
    h("p", {}, "Every table of the atlas data, readable with pandas, DuckDB or Polars: ",
      boot.downloads.flatMap((name, i) => [i ? ", " : "", name, " (", link(`downloads/${name}.parquet`, "Parquet"), ", ", link(`downloads/${name}.csv`, "CSV"), ")"]),
      ", and ", link("downloads/manifest.json", "manifest.json"), ". ", link("#/glossary", "Glossary of the statistics"), "."));
}

function flatten(obj, prefix = "") {
  const out = [];
  for (const [key, v] of Object.entries(obj)) {
    if (v && typeof v === "object" && !Array.isArray(v)) out.push(...flatten(v, `${prefix}${key}.`));
    else out.push([`${prefix}${key}`, text(v)]);
  }
  return out;
}
