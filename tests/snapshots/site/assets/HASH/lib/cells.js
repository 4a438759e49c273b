// The cell map: the dataset's display cells in 2-D, coloured by one feature's activation or one gene's expression.
import { h, missing, fill, fold } from "./dom.js";
import { boot, load } from "./data.js";
import { pointMap } from "./map.js";

// source: a promise of {cells, values 1..255, max} (builder/site/cellmap.py; undefined when the feature/gene has no
// value on any cell)
export function cellMapSection({ heading, what, source }) {
  if (!boot.has_cells) return null;
  const body = h("div", {}, h("p", { class: "muted" }, "Loading the cell map…"));
  const sec = fold({ title: heading, summary: `the dataset's cells coloured by ${what}`, body, id: "cells-h" });
  Promise.all([load("cells.json"), source]).then(([cells, vals]) => {
    const value = new Map();
    if (vals) vals.cells.forEach((c, i) => value.set(c, vals.values[i] / 255));
    const points = cells.x.map((x, i) => ({ id: i, x, y: cells.y[i], text: `${cells.types[cells.type[i]] ?? "unknown type"}${value.has(i) ? ` · ${what} ${(value.get(i) * vals.max).toPrecision(3)}` : ` · no ${what}`}` }));
    const map = pointMap({ points, max: 1023, size: 2.5, label: `Cells of the dataset coloured by ${what}; arrow keys move between cells` });
    map.setColour((p) => ({ value: value.has(p.id) ? value.get(p.id) : null }),
      { kind: "num", title: what, lo: vals ? 0 : null, hi: vals ? vals.max : null, none: `no ${what}` });
    fill(body, map.el, h("p", { class: "muted small" },
      `${value.size.toLocaleString("en-US")} of ${cells.x.length.toLocaleString("en-US")} display cells have a non-zero ${what}. Positions: ${cells.embedding || "not documented"}.`));
  }).catch((err) => fill(body, missing("The cell map", err)));
  return sec;
}
