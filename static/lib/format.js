// Number formatting shared by every view. "inf" is how shards spell an infinite odds ratio.

const nf = new Intl.NumberFormat("en-US");
export const int = (v) => (v == null ? "—" : nf.format(v));

export function num(v, digits = 3) {
  if (v == null) return "—";
  if (v === "inf") return "∞";
  if (v === "-inf") return "−∞";
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5)) return v.toExponential(Math.max(digits - 2, 1));
  return String(Number(v.toPrecision(digits)));
}

export const pct = (v) => (v == null ? "—" : `${(100 * v).toFixed(1)}%`);

// Sort key for values that may be "inf" or null (null sorts last).
export function key(v) {
  if (v === "inf") return Infinity;
  if (v === "-inf") return -Infinity;
  return v;
}
