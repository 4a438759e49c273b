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
export const featureShard = (layer, feature) => load(featurePath(layer, feature));

// Same mapping as builder/site/indexes.py: A-Z and 0-9 as themselves, anything else "_".
export function shardKey(ch) {
  const c = (ch || "").toUpperCase();
  return /^[A-Z0-9]$/.test(c) ? c : "_";
}

export const layerIds = () => boot.layers.map((l) => l.layer);
export const labelOf = (label) => label || "unlabelled";
