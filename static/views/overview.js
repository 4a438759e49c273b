// #/ : what the atlas is, per-layer statistics and charts, the chance baseline, downloads.
import { h, link } from "../lib/dom.js";
import { boot } from "../lib/data.js";
import { int, num, pct } from "../lib/format.js";
import { barChart, lineChart } from "../lib/chart.js";

export function render(el) {
  const t = boot.totals, layers = boot.layers;
  const labels = layers.map((l) => String(l.layer));
  const rate = layers.map((l) => (l.alive ? l.annotated / l.alive : null));
  const nullRate = layers.map((l) => l.annotated_null_rate);
  const hasNull = nullRate.some((v) => v != null) || boot.nulls.length > 0;
  const card = (value, what) => h("div", { class: "card" }, h("b", {}, value), h("span", {}, what));
  el.append(
    h("h1", {}, boot.title),
    boot.description && h("p", { class: "muted" }, boot.description),
    h("div", { class: "cards" },
      card(int(t.layers), "layers"), card(int(t.n_features), "features"), card(int(t.alive), "alive features"),
      card(int(t.annotated), "annotated features"), card(pct(t.alive ? t.annotated / t.alive : null), "annotated of alive"),
      card(int(t.n_modules), "modules")),
    hasNull ? null : h("p", { class: "notice" },
      "Chance baseline: not measured for this atlas. Annotation rates here cannot be compared with what random gene lists would reach."),
    h("div", { class: "grid2" },
      h("figure", {}, h("figcaption", {}, "Alive and annotated features per layer"),
        barChart({ title: "Alive and annotated features per layer", labels, format: int,
          series: [{ name: "alive", color: "var(--bar)", values: layers.map((l) => l.alive) },
                   { name: "annotated", color: "var(--bar2)", values: layers.map((l) => l.annotated) }] })),
      h("figure", {}, h("figcaption", {}, hasNull ? "Annotated share of alive features, and expected by chance (dashed)" : "Annotated share of alive features"),
        lineChart({ title: "Annotation rate per layer", labels, format: pct, max: Math.max(0.05, ...rate.filter((v) => v != null), ...nullRate.filter((v) => v != null)),
          series: [{ name: "annotated", color: "var(--bar2)", values: rate },
                   { name: "expected by chance", color: "var(--muted)", dash: "4 3", values: nullRate }] }))),
    boot.nulls.length ? nullTable(boot.nulls) : null,
    h("h2", {}, "Layers"),
    h("div", { class: "scroll-x" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Layer", "Features", "Alive", "Annotated", "Rate", "By chance", "Modules", "Var. explained"].map((c, i) => h("th", { class: i ? "num" : "" }, c)))),
      h("tbody", {}, layers.map((l, i) => h("tr", {},
        h("td", {}, link(`#/layer/${l.layer}`, `Layer ${l.layer}`)),
        h("td", { class: "num" }, int(l.n_features)), h("td", { class: "num" }, int(l.alive)),
        h("td", { class: "num" }, int(l.annotated)), h("td", { class: "num" }, pct(rate[i])),
        h("td", { class: "num" }, pct(l.annotated_null_rate)), h("td", { class: "num" }, int(l.n_modules)),
        h("td", { class: "num" }, l.variance_explained == null ? "—" : pct(l.variance_explained))))))),
    about(),
  );
}

// Every rate beside its null: one row per analysis and measure, one column pair per layer.
function nullTable(rows) {
  const layers = [...new Set(rows.map((r) => r[0]))].sort((a, b) => a - b);
  const keys = [...new Map(rows.map((r) => [`${r[1]}\u0000${r[2]}`, r])).values()];
  const cell = (v, share) => (v == null ? "—" : share ? pct(v) : Number.isInteger(v) ? int(v) : num(v));
  return h("section", {},
    h("h2", {}, "Observed vs chance"),
    h("p", { class: "muted" }, "Each measure beside the same measure on its null (hover a row for how the null is made)."),
    h("div", { class: "scroll-x" }, h("table", { class: "nulls" },
      h("thead", {}, h("tr", {}, h("th", {}, "Analysis"), h("th", {}, "Measure"),
        layers.map((l) => h("th", { class: "num" }, `Layer ${l} observed / null`)))),
      h("tbody", {}, keys.map(([, analysis, measure, , , note]) => {
        const share = analysis === "annotation" || analysis === "svd";
        return h("tr", { title: note || "" }, h("td", {}, analysis), h("td", {}, measure),
          layers.map((l) => {
            const r = rows.find((x) => x[0] === l && x[1] === analysis && x[2] === measure);
            return h("td", { class: "num" }, r ? `${cell(r[3], share)} / ${cell(r[4], share)}` : "");
          }));
      })))));
}

function about() {
  const m = boot.model || {}, d = boot.dataset || {};
  const rows = [
    ["Model", [m.family, m.name].filter(Boolean).join(" · ") || "—"],
    ["SAE", boot.sae && boot.sae.kind ? boot.sae.kind : "—"],
    ["Cells", d.cells != null ? int(d.cells) : "—"],
    ["Tissues", Array.isArray(d.tissues) ? d.tissues.join(", ") : "—"],
    ["Gene-set databases", boot.genesets.map((g) => g.name + (g.version ? ` (${g.version})` : "")).join(", ") || "—"],
  ];
  return h("section", {},
    h("h2", {}, "About this atlas"),
    h("dl", { class: "stats" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    boot.notes.length ? h("ul", {}, boot.notes.map((n) => h("li", { class: "muted" }, n))) : null,
    h("h2", {}, "Downloads"),
    h("p", {}, "Every table of the atlas data, readable with pandas, DuckDB or Polars: ",
      boot.downloads.flatMap((name, i) => [i ? ", " : "", name, " (",
        link(`downloads/${name}.parquet`, "Parquet"), ", ", link(`downloads/${name}.csv`, "CSV"), ")"]),
      ", and ", link("downloads/manifest.json", "manifest.json"), "."));
}
