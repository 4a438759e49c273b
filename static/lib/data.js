// One fetch per shard URL: the promise is cached, so concurrent callers share it.

export const boot = JSON.parse(document.getElementById("boot").textContent);
const cache = new Map();

export function load(path) {
  if (!cache.has(path)) {
    const p = fetch(boot.data + path).then((r) => {
      if (!r.ok) throw new Error(`could not load ${path} (HTTP ${r.status})`);
      return r.json();
    });
    p.catch(() => cache.delete(path)); // a failed fetch may be retried later
    cache.set(path, p);
  }
  return cache.get(path);
}

export const featureShard = (layer, feature) => load(`feat/${layer}/${Math.floor(feature / boot.bucket)}.json`);

// Same mapping as builder/shards.py: A-Z and 0-9 as themselves, anything else "_".
export function shardKey(ch) {
  const c = (ch || "").toUpperCase();
  return /^[A-Z0-9]$/.test(c) ? c : "_";
}

export const layerIds = () => boot.layers.map((l) => l.layer);
export const labelOf = (label) => label || "unlabelled";
