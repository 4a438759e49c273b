// #/glossary and #/glossary/TERM : every statistic of the site explained.
import { h, append } from "../lib/dom.js";
import { GLOSSARY } from "../lib/glossary.js";

export function render(el, term) {
  append(el, h("h1", {}, "Glossary"),
    h("p", { class: "muted" }, "What each number on this site means. Every “?” beside a column or value links here."),
    h("dl", { class: "glossary" }, Object.entries(GLOSSARY).map(([k, [name, text]]) => [
      h("dt", { id: `g-${k}`, tabindex: "-1", class: k === term ? "hit" : "" }, name), h("dd", {}, text)])));
  if (term && GLOSSARY[term]) requestAnimationFrame(() => { const t = el.querySelector(`#g-${term}`); if (t) { t.scrollIntoView(); t.focus(); } });
  else if (term) el.insertBefore(h("p", { class: "warn" }, `No glossary entry for “${term}”.`), el.children[1]);
}
