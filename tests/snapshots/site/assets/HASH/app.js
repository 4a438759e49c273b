// Hash router: each view is an ES module loaded on first visit; every view state is a link.
import { h, fill } from "./lib/dom.js";
import { boot, prefetch, featurePath, nameKey } from "./lib/data.js";

const ROUTES = [
  [/^\/?$/, "overview"],
  [/^\/layer\/(\d+)$/, "layer"],
  [/^\/feature\/(\d+)\/(\d+)$/, "feature"],
  [/^\/genes(?:\/(.*))?$/, "genes"],
  [/^\/terms(?:\/(.*))?$/, "terms"],
  [/^\/celltypes(?:\/(.*))?$/, "celltypes"],
  [/^\/modules(?:\/(\d+))?$/, "modules"],
  [/^\/flow$/, "flow"],
  [/^\/comparisons$/, "comparisons"],
  [/^\/about$/, "about"],
  [/^\/glossary(?:\/(.*))?$/, "glossary"],
  [/^\/tf(?:\/(.*))?$/, "tf"],
  [/^\/links$/, "links"],
];

const main = document.getElementById("main");
let current = { name: null, view: null };
let seq = 0;

function parse() {
  const path = location.hash.replace(/^#/, "") || "/";
  for (const [re, name] of ROUTES) {
    const m = path.match(re);
    if (m) return { name, params: m.slice(1).map((p) => (p == null ? null : safeDecode(p))) };
  }
  return { name: null, params: [path] };
}

function safeDecode(p) {
  try { return decodeURIComponent(p); } catch { return p; }
}

async function route() {
  const { name, params } = parse();
  const mine = ++seq;
  for (const a of document.querySelectorAll(".top nav a")) {
    if (a.dataset.view === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  closeMenu();
  if (!name) return show(notFound(params[0]));
  // A view that can update in place (e.g. search results) keeps its input focus and scroll.
  if (current.name === name && current.view && current.view.update) return current.view.update(...params);
  warm(name, params);
  try {
    const mod = await import(`./views/${name}.js`);
    const el = h("div", { class: `view-${name}` });
    const view = await mod.render(el, ...params);
    if (mine !== seq) return; // a newer navigation won
    current = { name, view };
    show(el);
  } catch (err) {
    if (mine !== seq) return;
    current = { name: null, view: null };
    show(h("div", {}, h("h1", {}, "Could not show this page"), h("p", { class: "warn" }, String(err && err.message ? err.message : err)),
      h("p", {}, h("a", { href: "#/" }, "Back to the overview"))));
  }
}

// Ask for the view's modules and its first data file together, so a cold page needs one round trip for both.
const preloaded = new Set();
function warm(name, params) {
  for (const dep of [`views/${name}.js`, ...(boot.deps[name] || [])]) {
    if (preloaded.has(dep)) continue;
    preloaded.add(dep);
    document.head.append(h("link", { rel: "modulepreload", href: new URL(`./${dep}`, import.meta.url).href }));
  }
  const data = {
    layer: ([l]) => (info(l) ? `layer/${l}.json` : null),
    feature: ([l, f]) => (info(l) && Number(f) < info(l).n_features ? featurePath(Number(l), Number(f)) : null), modules: () => "modules.json",
    flow: () => "flow.json", comparisons: () => "comparisons.json", links: () => (boot.links ? "links.json" : null),
    celltypes: ([n]) => (n && boot.celltypes.includes(n) ? `celltypes/p/${boot.celltypes.indexOf(n)}.json` : "celltypes/index.json"),
    genes: ([s]) => (s && boot.gene_keys.includes(nameKey(s, 1)) ? `genes/n/${nameKey(s, 1)}.json` : null),
    tf: ([s]) => { // the path of lib/tfdata.js, without loading it on first paint
      if (!s) return (boot.tf_keys || []).length ? "tf/index.json" : null;
      return (boot.tf_keys || []).includes(nameKey(s)) ? `tf/p/${nameKey(s)}.json` : null;
    },
  }[name];
  const path = data && data(params);
  if (path) prefetch(path);
}
const info = (l) => boot.layers.find((x) => String(x.layer) === String(l));

function notFound(path) {
  return h("div", {}, h("h1", {}, "Page not found"),
    h("p", {}, "This atlas has no page at ", h("code", {}, path), ". ", h("a", { href: "#/" }, "Back to the overview"), "."));
}

function show(el) {
  fill(main, el);
  window.scrollTo(0, 0);
  const focus = el.querySelector("[data-autofocus]");
  if (focus) focus.focus();
  const title = el.querySelector("h1");
  document.title = `${title ? title.textContent + " · " : ""}${document.querySelector(".brand").textContent}`;
}

// "Skip to content" moves focus to the main region instead of changing the route.
document.querySelector("[data-skip]").addEventListener("click", (ev) => { ev.preventDefault(); main.focus(); });

const menu = document.getElementById("menu");
function closeMenu() { menu.setAttribute("aria-expanded", "false"); document.body.classList.remove("menu-open"); }
menu.addEventListener("click", () => {
  const open = menu.getAttribute("aria-expanded") !== "true";
  menu.setAttribute("aria-expanded", String(open));
  document.body.classList.toggle("menu-open", open);
});

document.getElementById("theme").addEventListener("click", () => {
  const root = document.documentElement;
  const dark = root.dataset.theme ? root.dataset.theme === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  root.dataset.theme = dark ? "light" : "dark";
  try { localStorage.setItem("atlas-theme", root.dataset.theme); } catch {}
  window.dispatchEvent(new Event("themechange"));
});

window.addEventListener("hashchange", () => { if (location.hash !== "#main") route(); });
route();
