// Perturbed genes (builder/site/perturbation.py): tf/p/KK.json holds every record of the genes whose names start
// with the two characters KK; boot.tf_keys lists the files that exist, so a gene never perturbed costs no request.
import { boot, load, nameKey } from "./data.js";

export const tfPath = (s) => (s && (boot.tf_keys || []).includes(nameKey(s)) ? `tf/p/${nameKey(s)}.json` : null);

// {name, recs} for a symbol in any case (an exact match first), or null when it was not perturbed.
export async function tfEntry(sym) {
  const path = tfPath(sym);
  if (!path) return null;
  const shard = await load(path);
  const name = Object.hasOwn(shard, sym) ? sym : Object.keys(shard).find((k) => k.toUpperCase() === sym.toUpperCase());
  return name ? { name, recs: shard[name] } : null;
}

export const tfHref = (sym) => `#/tf/${encodeURIComponent(sym)}`;

// The verdicts of `atlas perturb` (tf_specificity.verdict), each with the sentence that explains it at the dataset's
// level (its --alpha, recorded with the dataset and carried by the shard).
export const VERDICTS = {
  specific: (a) => `Specific: its curated targets are enriched among the genes loaded by the features that respond to its knockdown (q < ${a}).`,
  "not specific": (a) => `Not specific: expression alone finds its targets (ceiling q < ${a}), but the responding features do not (q ≥ ${a}).`,
  "no signal": () => "No signal: neither the responding features nor expression alone find its targets enriched, so the knockdown gives nothing to detect.",
};
// A non-TF's verdict (a negative control, tested against the targets of `tf`) says so.
const NEGATIVE = {
  specific: (a, tf) => `Specific, as a negative control: the targets of ${tf} (the TF nearest to it in cells and knockdown) are enriched among the genes loaded by its responding features (q < ${a}); a perturbation that is not a TF should not show this.`,
  "not specific": (a, tf) => `Not specific, as expected of a negative control: expression alone finds the targets of ${tf} (ceiling q < ${a}), its responding features do not.`,
  "no signal": (a, tf) => `No signal, as a negative control: neither its responding features nor expression alone find the targets of ${tf} enriched.`,
};
export const verdictText = (v, a, tf = null) => {
  const table = tf ? NEGATIVE : VERDICTS;
  return table[v] ? table[v](a, tf) : v ? `Verdict: ${v}.` : "No verdict: published counts only, no test.";
};
