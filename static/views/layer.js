// #/layer/L : feature map and a sortable, filterable table of every feature of one layer.
import { h, link } from "../lib/dom.js";
import { boot, load, layerIds, labelOf } from "../lib/data.js";
import { int, num } from "../lib/format.js";
import { vtable } from "../lib/vtable.js";
import { featureMap } from "../lib/map.js";

const COLUMNS = [
  { key: "f", label: "Feature", width: "4.5rem", num: true, text: (r) => `F${r.f}`, sort: (r) => r.f },
  { key: "label", label: "Label", width: "minmax(8rem, 2fr)", text: (r) => labelOf(r.label), title: (r) => r.label, sort: (r) => r.label || null },
  { key: "genes", label: "Top genes", width: "minmax(6rem, 1.4fr)", text: (r) => r.genes.join(" "), sort: (r) => r.genes[0] || null },
  { key: "freq", label: "Freq.", width: "4.2rem", num: true, text: (r) => num(r.freq, 2), sort: (r) => r.freq },
  { key: "ne", label: "Enr.", width: "3.2rem", num: true, text: (r) => int(r.ne), sort: (r) => r.ne },
  { key: "mod", label: "Mod.", width: "3.2rem", num: true, text: (r) => (r.mod == null ? "—" : r.mod), sort: (r) => r.mod },
];

export async function render(el, layerParam) {
  const layer = Number(layerParam);
  if (!layerIds().includes(layer)) throw new Error(`This atlas has no layer ${layer}.`);
  const d = await load(`layer/${layer}.json`);
  const rows = d.feature.map((f, i) => ({
    f, alive: d.alive[i], freq: d.frequency[i], mean: d.mean_activation[i], ne: d.n_enrichments[i],
    mod: d.module[i], label: d.label[i], genes: d.genes[i], x: d.x[i], y: d.y[i],
  }));
  const byGene = new Map();
  rows.forEach((r) => r.genes.forEach((g) => {
    const k = g.toUpperCase();
    if (!byGene.has(k)) byGene.set(k, []);
    byGene.get(k).push(r);
  }));
  const input = h("input", { type: "search", id: "layer-filter", placeholder: "Gene (e.g. CD74) or label", "aria-label": "Filter features by top gene or label", autocomplete: "off" });
  const annotated = h("input", { type: "checkbox", id: "only-annotated" });
  const alive = h("input", { type: "checkbox", id: "only-alive", checked: true });
  const count = h("p", { class: "count muted", "aria-live": "polite" });
  const table = vtable({ columns: COLUMNS, rows, label: `Features of layer ${layer}`, href: (r) => `#/feature/${layer}/${r.f}`, sort: { key: "f", dir: 1 } });
  const withXY = rows.filter((r) => r.x != null && r.alive);
  const map = boot.has_map && withXY.length ? featureMap({
    label: `Map of the features of layer ${layer}`,
    points: withXY.map((r) => ({ id: r.f, x: r.x, y: r.y, color: r.mod, text: `F${r.f} · ${labelOf(r.label)} · ${r.genes.slice(0, 3).join(" ")}` })),
    onPick: (p) => (location.hash = `#/feature/${layer}/${p.id}`),
  }) : null;

  function apply() {
    const q = input.value.trim().toUpperCase();
    let list = q ? (byGene.get(q) || []).concat(rows.filter((r) => !r.genes.some((g) => g.toUpperCase() === q) && (r.label || "").toUpperCase().includes(q))) : rows;
    if (alive.checked) list = list.filter((r) => r.alive);
    if (annotated.checked) list = list.filter((r) => r.ne > 0);
    table.setRows(list);
    count.textContent = `${int(list.length)} of ${int(rows.length)} features${q ? ` match “${input.value.trim()}”` : ""}`;
    if (map) map.setHighlight(list.length === rows.length ? null : new Set(list.map((r) => r.f)));
  }
  let timer = 0;
  input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(apply, 120); });
  annotated.addEventListener("change", apply);
  alive.addEventListener("change", apply);
  apply();

  const info = boot.layers.find((l) => l.layer === layer);
  el.append(
    h("h1", {}, `Layer ${layer}`),
    h("nav", { class: "pills", "aria-label": "Layers" }, layerIds().map((l) =>
      link(`#/layer/${l}`, String(l), l === layer ? { "aria-current": "page" } : {}))),
    h("p", { class: "muted" }, `${int(info.n_features)} features, ${int(info.alive)} alive, ${int(info.annotated)} annotated, ${int(info.n_modules)} modules.`),
    h("div", { class: "layer-grid" },
      map ? h("section", { "aria-label": "Feature map" }, map.el, h("p", { class: "muted" }, "Colour: co-activation module. Click a point to open its feature.")) : h("p", { class: "muted" }, "This atlas has no feature map for this layer."),
      h("section", { "aria-label": "Feature table" },
        h("div", { class: "toolbar" }, input, h("label", { class: "check" }, alive, "alive only"), h("label", { class: "check" }, annotated, "annotated only")),
        count, table.el)),
  );
}
