// The links of an atlas (`atlas link`): the feature page's "same program in <other atlas>" section and the overview's
// shares per pair of layers. Shard fields: builder/site/links.py. Everything from data is inserted as text.
import { h, link, help, table, fold, fill, append, missing } from "./dom.js";
import { boot, load, rows, labelOf } from "./data.js";
import { int, num, pct, pval } from "./format.js";

export const others = () => (boot.links ? boot.links.others : []);
const name = (o) => (o.kind === "twin" ? "the untrained twin of this model" : o.title || o.name);

// The partner's page in the other atlas, rendered beside this one (site/<other>/); a twin has no pages.
export function partnerLink(o, layer, feature) {
  const text = `L${layer}:F${feature}`;
  return o.href ? h("a", { href: `${o.href}#/feature/${layer}/${feature}` }, text) : text;
}

export const genesText = (r) => (r.overlap ? `${int(r.overlap)}: ${(r.genes || []).join(", ")}` : "—");
export const typesText = (r) => ((r.cell_types || []).length ? r.cell_types.join(", ") : "—");

// The feature page's section: one table per other atlas, its kept partners per layer, best first.
export function linksSection(layer, feature) {
  if (!boot.links) return null;
  const b = Math.floor(feature / boot.bucket);
  const body = h("div", {});
  const section = fold({ title: ["The same program in other atlases ", help("link_r", "a profile correlation")],
    summary: `${others().length} linked atlas${others().length === 1 ? "" : "es"}`, body, id: "links-h" });
  if (!(boot.links.shards[String(layer)] || []).includes(b)) {
    append(body, h("p", { class: "muted" }, "Not linked: the feature is active in too few of the shared cells."));
    return section;
  }
  append(body, h("p", { class: "muted" }, "Loading…"));
  load(`links/${layer}/${b}.json`).then((s) => fill(body, partnerTables(rows(s.rows).filter((r) => r.feature === feature))))
    .catch((err) => fill(body, missing("The links of this feature", err)));
  return section;
}

function partnerTables(list) {
  if (!list.length) return h("p", { class: "muted" }, "Not linked: the feature is active in too few of the shared cells.");
  return others().map((o, i) => {
    const mine = list.filter((r) => r.other === i).sort((a, b) => b.beyond - a.beyond || b.r - a.r);
    if (!mine.length) return null;
    const best = mine.find((r) => r.beyond);
    const twin = o.kind === "twin";
    return h("div", { class: "links-other" },
      h("h3", {}, `The same program in ${name(o)}`),
      h("p", {}, best ? ["Best match beyond ", twin ? "the cell-type shuffle" : "both nulls", ": ", partnerLink(o, best.other_layer, best.other_feature),
        twin ? "" : ` (${labelOf(best.label)})`, `: r = ${num(best.r)}, where cell type alone gives ${num(best.null_r)}`,
        twin ? "" : ` and the best feature of its untrained twin ${num(best.twin_r)}`, `; q = ${pval(best.q)}.`]
        : h("span", { class: "muted" }, `No partner ${twin ? "beyond the cell-type shuffle" : "beyond both nulls"} (every kept partner is listed below).`)),
      // a twin has no labels, top genes or cell-type tests of its own: those columns are left out
      table({ caption: `Partners in ${name(o)}`, columns: [{ label: "Partner" }, ...(twin ? [] : [{ label: "Label" }]),
        { label: "r", num: true, help: ["link_r", "a profile correlation"] },
        { label: "Cell type alone", num: true, help: ["link_null", "the cell-type null"] },
        ...(twin ? [] : [{ label: "Untrained twin", num: true, help: ["link_twin", "the twin null"] }]),
        { label: "q", num: true, help: ["q", "a q-value"] }, { label: "Beyond" },
        ...(twin ? [] : [{ label: "Shared top genes", help: ["link_genes", "shared top genes"] }, { label: "Shared cell types" }])],
      rows: mine.map((r) => [partnerLink(o, r.other_layer, r.other_feature), ...(twin ? [] : [labelOf(r.label)]), num(r.r),
        `${num(r.null_r)} ± ${num(r.null_sd)}`, ...(twin ? [] : [num(r.twin_r)]), pval(r.q),
        r.beyond ? (r.mutual ? "yes (mutual)" : "yes") : "no", ...(twin ? [] : [genesText(r), typesText(r)])]) }));
  });
}

// The overview's section: per pair of layers, the share of this atlas' features with a match beyond both nulls.
export function linksOverview() {
  if (!boot.links) return null;
  const pairs = rows(boot.links.pairs);
  return fold({ title: ["The same programs in other atlases ", help("link_r", "a profile correlation")],
    summary: `matches per pair of layers in ${others().map(name).join(", ")}`, body: [
    h("p", {}, "How to read this: each cell is the share of this atlas' features (of a layer, row) whose per-cell activation profile over the shared cells has a partner in the other atlas' layer (column) beyond both nulls: a shuffle of cells within cell type (so two features that only mark the same cell type do not count) and the other model's untrained twin (the partner must correlate better than any of the twin's features). Brackets: exact 95% interval; hover for the counts and the untrained twin's own share. ",
      link("#/links", "The strongest matches"), "."),
    others().map((o, i) => {
      const mine = pairs.filter((p) => p.other === i);
      const layers = [...new Set(mine.map((p) => p.layer))].sort((a, b) => a - b);
      const cols = [...new Set(mine.map((p) => p.other_layer))].sort((a, b) => a - b);
      const at = new Map(mine.map((p) => [`${p.layer}:${p.other_layer}`, p]));
      const cell = (p) => (!p || !p.tested ? "—" : h("span", { title: `${int(p.beyond_both)} of ${int(p.tested)} features; ${int(p.matched)} beyond the cell-type shuffle${p.twin_share != null ? `; the untrained twin's share ${pct(p.twin_share)} [${pct(p.twin_lo)}–${pct(p.twin_hi)}]` : ""}` },
        `${pct(p.share)} [${pct(p.share_lo)}–${pct(p.share_hi)}]`));
      return h("div", { class: "links-other" },
        h("h3", {}, o.href ? ["Matched in ", h("a", { href: o.href }, name(o))] : `Matched in ${name(o)}`,
          h("span", { class: "muted" }, ` (${int(boot.links.cells[o.name])} shared cells${o.kind === "twin" ? "; beyond the cell-type shuffle, the one null a twin has" : ""})`)),
        table({ caption: `Share of features with a match in ${name(o)}, per pair of layers`, cls: "links-shares",
          columns: [{ label: "Layer" }, ...cols.map((c) => ({ label: `${o.kind === "twin" ? "Twin" : "Other"} layer ${c}`, num: true }))],
          rows: layers.map((l) => [link(`#/layer/${l}`, `Layer ${l}`), ...cols.map((c) => cell(at.get(`${l}:${c}`)))]) }));
    })] });
}
