// The overview's "SAE training" section: per layer, the validation-loss curve (manifest sae.training[L].curve),
// how many steps training took and why it stopped, how far the decoder moved from its random start, and the
// held-out variance explained and dead features (table layers). Numbers are the atlas' own; nothing is computed.
import { h, help, table, fold } from "./dom.js";
import { boot } from "./data.js";
import { int, num, pct } from "./format.js";
import { lineChart, figure } from "./chart.js";
import { stopName } from "./names.js";

export function trainingSection() {
  const tr = (boot.sae && boot.sae.training) || {};
  const layers = boot.layers.filter((l) => tr[String(l.layer)]);
  if (!layers.length) {
    const given = boot.layers.some((l) => l.variance_explained != null);
    return fold({ title: "SAE training", summary: "not recorded", body: h("p", { class: "muted" },
      boot.sae && boot.sae.note ? boot.sae.note : "This atlas records no SAE training (SAEs given with --sae, or an imported atlas).",
      given ? " The variance explained per layer is in the Layers table." : "") });
  }
  const steps = layers.map((l) => tr[String(l.layer)].steps);
  return fold({ title: "SAE training", id: "training", summary: `${layers.length} SAEs, ${int(Math.min(...steps))}–${int(Math.max(...steps))} steps`, body: [
    h("p", {}, "Each layer's SAE was trained on a sample of the layer's activations and stopped when its validation loss (squared error over total variance, on tokens held out of training) stopped improving, or at its cap. ",
      "The decoder's distance from its random start is the cosine of each decoder row with its initial direction: 1 means unchanged, so a layer whose rows stay near 1 learned little. ",
      "Variance explained and dead features are measured on the held-out cells. ", help("variance_explained", "variance explained")),
    table({ caption: "SAE training per layer", scroll: true, cls: "training-table",
      columns: [{ label: "Layer" }, { label: "Steps", num: true }, { label: "Epochs", num: true }, { label: "Stopped" },
        { label: "Decoder cosine to start (mean / median)", num: true, help: ["decoder_init_cosine", "the decoder's cosine to its start"] },
        { label: "Rows above 0.9", num: true }, { label: "Var. explained", num: true, help: ["variance_explained", "variance explained"] },
        { label: "Dead features", num: true, help: ["dead_features", "dead features"] }, { label: "L0", num: true }],
      rows: layers.map((l) => {
        const t = tr[String(l.layer)], c = t.decoder_init_cosine || {};
        return [`Layer ${l.layer}`, int(t.steps), int(t.epochs), stopName(t.stopped), c.mean != null ? `${num(c.mean, 2)} / ${num(c.median, 2)}` : "—",
          pct(c["share_above_0.9"]), pct(l.variance_explained ?? t.variance_explained), int(l.dead_features ?? t.dead_features), num(t.l0, 3)];
      }) }),
    h("div", { class: "grid2" }, layers.map((l) => curve(l.layer, tr[String(l.layer)])))] });
}

function curve(layer, t) {
  const pts = (t.curve || []).filter((p) => p.val_loss != null);
  if (pts.length < 2) return h("p", { class: "muted" }, `Layer ${layer}: ${pts.length ? "one measurement" : "no validation curve"} recorded.`);
  const vals = pts.flatMap((p) => [p.val_loss, p.train_loss]).filter((v) => v != null && v > 0);
  return figure(`Layer ${layer}: loss during training (${int(t.steps)} steps, ${stopName(t.stopped)})`,
    lineChart({ title: `SAE training loss, layer ${layer}`, xs: pts.map((p) => p.step), xTitle: "Step", xFormat: int, yTitle: "Loss (share of variance)",
      logY: Math.max(...vals) / Math.min(...vals) > 20, format: (v) => num(v, 2), height: 200, points: false,
      series: [{ name: "validation", color: "var(--bar2)", values: pts.map((p) => p.val_loss) },
        { name: "training (recent steps)", color: "var(--bar)", dash: "4 3", values: pts.map((p) => p.train_loss ?? null) }] }));
}
