// #/links : the strongest matches of this atlas' features in each linked atlas (rank-1 partners beyond both nulls,
// highest correlation first), with their shared top genes and cell types. Shard fields: builder/site/links.py.
import { h, link, featureLink, help, table, fill, append } from "../lib/dom.js";
import { boot, load, rows, labelOf } from "../lib/data.js";
import { int, num, pval, plural } from "../lib/format.js";
import { others, partnerLink, genesText, typesText } from "../lib/links.js";

const PAGE = 50; // rows shown before "show more": the table stays light

export async function render(el) {
  append(el, h("h1", {}, "Links to other atlases"));
  if (!boot.links) {
    append(el, h("p", { class: "muted" }, "This atlas is not linked to another atlas. ", h("code", {}, "atlas link --atlas A --atlas B"),
      " links two atlases built on the same cells; the overview then shows the share of matched features per pair of layers."));
    return;
  }
  const data = await load("links.json");
  const all = rows(data.rows);
  append(el, h("p", {}, "Each feature of this atlas beside its best partner in the other atlas, where that partner passes both nulls ",
    help("link_null", "the nulls"), ": its per-cell profile correlates with the feature's beyond what cell type alone gives, and better than any feature of the other model's untrained twin. Highest correlation first; every partner of every feature is in the downloads (",
    h("code", {}, "feature_links"), ")."));
  others().forEach((o, i) => {
    const mine = all.filter((r) => r.other === i);
    const twin = o.kind === "twin";
    const body = h("div", {});
    const show = (n) => fill(body, table({ caption: `Strongest matches in ${o.title || o.name}`, cls: "links-strong",
      columns: [{ label: "Feature" }, { label: "Label" }, { label: "Partner" }, { label: "Partner label" },
        { label: "r", num: true, help: ["link_r", "a profile correlation"] }, { label: "Cell type alone", num: true, help: ["link_null", "the cell-type null"] },
        ...(twin ? [] : [{ label: "Untrained twin", num: true, help: ["link_twin", "the twin null"] }]), { label: "q", num: true, help: ["q", "a q-value"] },
        { label: "Shared top genes", help: ["link_genes", "shared top genes"] }, { label: "Shared cell types" }],
      rows: mine.slice(0, n).map((r) => [featureLink(r.layer, r.feature), labelOf(r.label), partnerLink(o, r.other_layer, r.other_feature), labelOf(r.other_label),
        num(r.r), num(r.null_r), ...(twin ? [] : [num(r.twin_r)]), pval(r.q), genesText(r), typesText(r)]) }),
      n < mine.length ? h("button", { type: "button", onclick: () => show(n + PAGE) }, `show ${int(Math.min(PAGE, mine.length - n))} more of ${int(mine.length)}`) : null);
    show(PAGE);
    append(el, h("section", {},
      h("h2", {}, twin ? "In the untrained twin of this model" : ["In ", o.href ? h("a", { href: o.href }, o.title || o.name) : o.title || o.name]),
      h("p", { class: "muted" }, `${plural(data.matches[i], "feature")} with a match ${twin ? "beyond the cell-type shuffle" : "beyond both nulls"}`,
        data.matches[i] > mine.length ? `; the strongest ${int(mine.length)} listed` : "", `, over ${int(boot.links.cells[o.name])} shared cells.`),
      mine.length ? body : h("p", { class: "muted" }, "None.")));
  });
  append(el, h("p", {}, link("#/", "Shares per pair of layers on the overview"), "."));
}
