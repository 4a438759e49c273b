// #/modules and #/modules/L : co-activation modules of each layer, their top terms and members.
import { h, link, featureLink, help, fill, append } from "../lib/dom.js";
import { boot, load, rows, labelOf } from "../lib/data.js";
import { int } from "../lib/format.js";

const SHOWN = 12; // members listed before "show all": keeps the page light at 18 layers

export async function render(el, layerParam) {
  const mods = rows(await load("modules.json")); // [{layer, module, n_features, label, top_terms, members}]
  const layers = [...new Set(mods.map((m) => m.layer))];
  const layer = layerParam != null ? Number(layerParam) : null;
  if (layer != null && !boot.layers.some((l) => l.layer === layer)) throw new Error(`This atlas has no layer ${layer}.`);
  const list = layer == null ? mods : mods.filter((m) => m.layer === layer);
  const nullMods = rows(boot.nulls).some((r) => r.analysis === "modules");
  append(el, 
    h("h1", {}, layer == null ? "Modules" : `Modules of layer ${layer}`),
    h("p", { class: "muted" }, `${int(mods.length)} co-activation modules in ${layers.length} layers `, help("module", "a module"), ". ",
      nullMods ? "Their counts beside shuffled codes are on the overview." : "No shuffled-code baseline was recorded for these modules."),
    h("nav", { class: "pills", "aria-label": "Layers" }, link("#/modules", "all", layer == null ? { "aria-current": "page" } : {}),
      layers.map((l) => link(`#/modules/${l}`, String(l), l === layer ? { "aria-current": "page" } : {}))),
    list.length ? h("div", { class: "mods" }, list.map(card)) : h("p", { class: "muted" }, "No module in this layer."));
}

function card({ layer, module, n_features, label, top_terms, members }) {
  const top = rows(top_terms);
  const box = h("div", { class: "members" });
  const showMembers = (all) => fill(box, ...(all ? members : members.slice(0, SHOWN)).map((f) => featureLink(layer, f, `F${f}`)),
    !all && members.length > SHOWN ? h("button", { type: "button", onclick: () => showMembers(true) }, `show all ${int(members.length)}`) : "");
  showMembers(false);
  return h("section", { class: "card" },
    h("h3", {}, `Module ${module} · layer ${layer}`),
    h("p", {}, labelOf(label), h("span", { class: "muted" }, ` · ${int(n_features)} features`)),
    top.length ? h("ol", {}, top.map((t) => h("li", {}, t.placeholder ? h("span", { class: "muted" }, `${t.term} (a placeholder, not a gene set)`) : t.term,
      h("span", { class: "muted" }, ` (${t.count})`)))) : null,
    box);
}
