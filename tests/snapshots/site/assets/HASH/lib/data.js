// One fetch per shard URL: the promise is cached, so concurrent callers share it; prefetch warms the same cache.

export const boot = JSON.parse(document.getElementById("boot").textContent);
const cache = new Map();

export class MissingData extends Error {}

export function load(path) {
  if (!cache.has(path)) {
    const p = fetch(boot.data + path).then((r) => {
      if (!r.ok) throw new MissingData(`The data file ${path} could not be loaded (HTTP ${r.status}).`);
      return r.json();
    }, () => { throw new MissingData(`The data file ${path} could not be loaded (network error).`); });
    p.catch(() => cache.delete(path)); // a failed fetch may be retried later
    cache.set(path, p);
  }
  return cache.get(path);
}

// Warm the cache without waiting or reporting: the view that needs the file will report any failure.
export const prefetch = (path) => { load(path).catch(() => {}); };

export const featurePath = (layer, feature) => `feat/${layer}/${Math.floor(feature / boot.bucket)}.json`;

// The site's only copy of builder/site/indexes.py shard_key and name_key (tests/test_views.py compares them):
// one character's key is A-Z (either case) and 0-9 as themselves, anything else "_"; a name's key is that of its
// first n characters (code points, as Python counts them), padded with "_".
function shardKey(ch) {
  const c = (ch || "").toUpperCase();
  return /^[A-Z0-9]$/.test(c) ? c : "_";
}
export function nameKey(name, n = 2) {
  const chars = Array.from(name || "");
  let key = "";
  for (let i = 0; i < n; i++) key += shardKey(chars[i]);
  return key;
}

// A columnar table of a shard ({field: [values]}, one array per field, all of one length; builder/site/encode.py)
// as an array of row objects. A field the writer left out (null on every row) reads as undefined: test it with == null.
export function rows(table) {
  const fields = Object.keys(table || {});
  const n = fields.length ? table[fields[0]].length : 0;
  const out = new Array(n);
  for (let i = 0; i < n; i++) {
    const r = {};
    for (const f of fields) r[f] = table[f][i];
    out[i] = r;
  }
  return out;
}

export const layerIds = () => boot.layers.map((l) => l.layer);
// A term as a reader reads it: MSigDB's set names lose their collection prefix and underscores
// (REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION reads "MHC CLASS II ANTIGEN PRESENTATION"); other terms as they are.
export const termText = (t) => { const m = /^(REACTOME|HALLMARK|KEGG|BIOCARTA|PID|WP|GOBP)_([A-Z0-9_]+)$/.exec(t || ""); return m ? m[2].replace(/_/g, " ") : t; };
export const labelOf = (label) => (label ? termText(label) : "unlabelled");

// One feature of its shard (feat/L/B.json, builder/site/shards.py), or null: its fields, the rows of each of the
// shard's tables that are its own, and its causal record (null when it was not tested).
const FEATURE_TABLES = ["genes", "enrichments", "celltypes", "top_cells", "neighbours", "perturbation"];
export async function loadFeature(layer, feature) {
  const shard = await load(featurePath(layer, feature));
  const d = rows(shard.features).find((r) => r.feature === feature);
  if (!d) return null;
  for (const t of FEATURE_TABLES) d[t] = rows(shard[t]).filter((r) => r.feature === feature);
  d.causal = Object.hasOwn(shard.causal, feature) ? shard.causal[feature] : null;
  return d;
}
