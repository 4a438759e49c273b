// #/glossary and #/glossary/TERM : every statistic of the site explained.
import { h, append, phone } from "../lib/dom.js";
import { GLOSSARY } from "../lib/glossary.js";

export function render(el, term) {
  append(el, h("h1", {}, "Glossary"),
    h("p", { class: "muted" }, "What each number on this site means. Every “?” beside a column or value links here."),
    // On a phone each entry folds (the one linked to stays open), so the page stays short.
    h("div", { class: "glossary" }, Object.entries(GLOSSARY).map(([k, [name, text]]) =>
      h("details", { id: `g-${k}`, open: !phone() || k === term },
        h("summary", { tabindex: "-1", class: k === term ? "hit" : "" }, h("dfn", {}, name)), h("p", {}, text)))));
  if (term && GLOSSARY[term]) requestAnimationFrame(() => { const t = el.querySelector(`#g-${term} summary`); if (t) { t.scrollIntoView(); t.focus(); } });
  else if (term) el.insertBefore(h("p", { class: "warn" }, `No glossary entry for “${term}”.`), el.children[1]);
}
