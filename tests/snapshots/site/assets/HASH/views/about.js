// #/about : methods and provenance, generated from the manifest (model, SAE, dataset, parameters, notes).
import { h, link, table, append } from "../lib/dom.js";
import { boot } from "../lib/data.js";
import { int } from "../lib/format.js";

const text = (v) => (v == null || v === "" ? "—" : Array.isArray(v) ? v.join(", ") : typeof v === "object" ? JSON.stringify(v) : String(v));

export function render(el) {
  const m = boot.model || {}, d = boot.dataset || {}, s = boot.sae || {};
  const rows = [
    ["Model", [m.family, m.name].filter(Boolean).join(" · ") || "—"],
    ["Layers", int(boot.totals.layers)],
    ["SAE", [s.kind, s.k != null ? `k = ${s.k}` : null, s.n_features != null ? `${int(s.n_features)} features in all` : null].filter(Boolean).join(" · ") || "—"],
    ["Dataset", [d.name, d.cells != null ? `${int(d.cells)} cells` : null, d.tokens != null ? `${int(d.tokens)} gene tokens` : null].filter(Boolean).join(" · ") || "—"],
    ["Tissues", text(d.tissues)],
    ["Cell map", d.cell_map ? text(d.cell_map.embedding) : "—"],
  ];
  const params = flatten(boot.parameters || {});
  append(el, h("h1", {}, "About this atlas"),
    boot.description ? h("p", {}, boot.description) : null,
    h("dl", { class: "stats" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("h2", {}, "Gene-set databases"),
    boot.genesets.length ? h("ul", {}, boot.genesets.map((g) => h("li", {}, g.name, h("span", { class: "muted" },
      [g.version ? ` · version ${g.version}` : "", g.terms != null ? ` · ${int(g.terms)} terms` : "", g.enrichments != null ? ` · ${int(g.enrichments)} enrichments` : ""].join(""))))) : h("p", { class: "muted" }, "None recorded."),
    h("h2", {}, "Notes on the statistics"),
    boot.notes.length ? h("ul", {}, boot.notes.map((n) => h("li", {}, n))) : h("p", { class: "muted" }, "None."),
    h("h2", {}, "Parameters"),
    params.length ? table({ caption: "Parameters of the build", columns: [{ label: "Parameter" }, { label: "Value" }], rows: params }) : h("p", { class: "muted" }, "No parameters recorded (an imported atlas keeps only what was published)."),
    boot.source && boot.source.kind ? [h("h2", {}, "Import"), h("p", {}, `Imported from the predecessor's ${boot.source.kind} files. What was not imported:`),
      h("ul", {}, boot.source.skipped.map((x) => h("li", { class: "muted" }, x)))] : null,
    h("h2", {}, "Downloads"),
    h("p", {}, "Every table of the atlas data, readable with pandas, DuckDB or Polars: ",
      boot.downloads.flatMap((name, i) => [i ? ", " : "", name, " (", link(`downloads/${name}.parquet`, "Parquet"), ", ", link(`downloads/${name}.csv`, "CSV"), ")"]),
      ", and ", link("downloads/manifest.json", "manifest.json"), ". ", link("#/glossary", "Glossary of the statistics"), "."));
}

function flatten(obj, prefix = "") {
  const out = [];
  for (const [k, v] of Object.entries(obj)) {
    if (v && typeof v === "object" && !Array.isArray(v)) out.push(...flatten(v, `${prefix}${k}.`));
    else out.push([`${prefix}${k}`, text(v)]);
  }
  return out;
}
