// Search-as-you-type box with a suggestion list; keyboard: ArrowDown/ArrowUp move, Enter picks.
// `hover` is called when a suggestion is likely to be picked (shown first, hovered, focused): prefetch there.
import { h, fill } from "./dom.js";

export function searchBox({ id, label, placeholder, suggest, pick, hover }) {
  const input = h("input", { type: "search", id, placeholder, "aria-label": label, autocomplete: "off", spellcheck: "false", "aria-controls": `${id}-list` });
  const list = h("ul", { class: "suggest", id: `${id}-list`, "aria-label": "Suggestions" });
  let seq = 0;
  async function refresh() {
    const mine = ++seq;
    const q = input.value.trim();
    const items = q ? await suggest(q) : [];
    if (mine !== seq) return; // typed on meanwhile
    fill(list, ...items.slice(0, 12).map((it) => {
      const b = h("button", { type: "button", onclick: () => pick(it.value) }, h("span", { class: "name" }, it.text), it.note ? h("small", {}, it.note) : null);
      if (hover) { b.addEventListener("pointerenter", () => hover(it.value)); b.addEventListener("focus", () => hover(it.value)); }
      return h("li", {}, b);
    }));
    if (hover && items.length) hover(items[0].value);
    if (q && !items.length) fill(list, h("li", { class: "muted none" }, "No match."));
  }
  input.addEventListener("input", refresh);
  input.addEventListener("keydown", (ev) => {
    const buttons = [...list.querySelectorAll("button")];
    if (ev.key === "Enter" && buttons.length) { ev.preventDefault(); buttons[0].click(); }
    if (ev.key === "ArrowDown" && buttons.length) { ev.preventDefault(); buttons[0].focus(); }
  });
  list.addEventListener("keydown", (ev) => {
    const buttons = [...list.querySelectorAll("button")];
    const i = buttons.indexOf(document.activeElement);
    if (ev.key === "ArrowDown" && i < buttons.length - 1) { ev.preventDefault(); buttons[i + 1].focus(); }
    if (ev.key === "ArrowUp") { ev.preventDefault(); (i > 0 ? buttons[i - 1] : input).focus(); }
  });
  return { input, list, refresh, clear() { seq++; fill(list); } };
}
