// Number formatting shared by every view: one format per kind of number. "inf" is how shards spell infinity.

const nf = new Intl.NumberFormat("en-US");
export const int = (v) => (v == null || Number.isNaN(v) ? "—" : nf.format(v));

export function num(v, digits = 3) {
  if (v == null || Number.isNaN(v)) return "—";
  if (v === "inf") return "∞";
  if (v === "-inf") return "−∞";
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5)) return v.toExponential(Math.max(digits - 2, 1));
  return String(Number(v.toPrecision(digits)));
}

// Shares (frequencies, rates) as percentages with two significant digits, so 0.00027 reads 0.027%, never 0.0%.
export function pct(v) {
  if (v == null || Number.isNaN(v)) return "—";
  if (v === 0) return "0%";
  const p = 100 * v;
  if (Math.abs(p) >= 10) return `${p.toFixed(1)}%`;
  if (Math.abs(p) < 1e-3) return `${p.toExponential(1)}%`;
  return `${Number(p.toPrecision(2))}%`;
}

// p- and q-values: an underflowed 0 is shown as the bound it stands for, never as "0".
export function pval(v) {
  if (v == null || Number.isNaN(v)) return "—";
  if (v === 0) return "< 1e-300";
  return num(v, 2);
}

// Sort key for values that may be "inf" or null (null sorts last).
export function key(v) {
  if (v === "inf") return Infinity;
  if (v === "-inf") return -Infinity;
  return v;
}

export const plural = (n, word, many = `${word}s`) => `${int(n)} ${n === 1 ? word : many}`;

// Axis ticks of a share: round percentages without trailing zeros (0%, 2.5%, 20%).
export const pctTick = (v) => `${Number((100 * v).toPrecision(3))}%`;
