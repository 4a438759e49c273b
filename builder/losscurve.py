"""The loss curve of a model pretrained by `atlas pretrain`, as an SVG drawn from its pretrain.json record: written
beside the checkpoint (models/pretrain.py) and drawn again on the site's model card (site/render.py)."""

from __future__ import annotations

import math
from html import escape

W, H, PAD = 480, 240, 44  # SVG size and margin, in px

METRIC = {"scgpt": ("MSE of the predicted bin", "exact-bin accuracy"),
          "geneformer": ("cross-entropy", "top-1 accuracy")}


def _polyline(points, x, y, colour: str, dash: str = "") -> str:
    path = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in points)
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2"{extra} points="{path}"/>'


def _baseline(record: dict) -> tuple[float, str]:
    b = record["baselines"]
    if record["family"] == "scgpt":
        return b["gene_mean_bin_mse"], "each gene's mean bin"
    return b["unigram_loss"], "gene frequencies"


def _steps_ticks(last: int, n: int = 5) -> list[int]:
    """About n round step numbers from 0 to last."""
    raw = max(last / n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [int(round(i * step)) for i in range(int(last // step) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Round values between exp(lo) and exp(hi), for a log axis: 1, 2, 5 times powers of ten."""
    a, b = math.exp(lo), math.exp(hi)
    out = [m * 10 ** e for e in range(math.floor(math.log10(a)), math.ceil(math.log10(b)) + 1) for m in (1, 2, 5)]
    inside = [v for v in out if a <= v <= b]
    return inside if len(inside) >= 2 else [a, b]


def loss_svg(record: dict) -> str:
    """Training loss (mean over each interval) and held-out loss against the optimiser step, log scale, with
    the no-context baseline's held-out loss as a grey line."""
    curve = record["curve"]
    train = [(p["step"], p["train_loss"]) for p in curve if p["train_loss"] is not None]
    held = [(p["step"], p["heldout_loss"]) for p in curve]
    base, base_name = _baseline(record)
    values = [v for _, v in train + held] + [base]
    lo, hi = math.log(min(values)), math.log(max(values))
    hi = hi if hi > lo else lo + 1
    last = max(curve[-1]["step"], 1)
    x = lambda s: PAD + (W - 1.5 * PAD) * s / last  # noqa: E731
    y = lambda v: H - PAD - (H - 1.6 * PAD) * (math.log(v) - lo) / (hi - lo)  # noqa: E731
    label = METRIC[record["family"]][0] + " (log scale)"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD / 2}" y2="{H - PAD}" stroke="#444"/>',
             f'<line x1="{PAD}" y1="{PAD * 0.6}" x2="{PAD}" y2="{H - PAD}" stroke="#444"/>',
             f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle">optimiser step</text>',
             f'<text x="12" y="{H / 2}" text-anchor="middle" transform="rotate(-90 12 {H / 2})">{escape(label)}</text>',
             *(f'<line x1="{x(t):.1f}" y1="{H - PAD}" x2="{x(t):.1f}" y2="{H - PAD + 4}" stroke="#444"/>'
               f'<text x="{x(t):.1f}" y="{H - PAD + 16}" text-anchor="middle">{t}</text>' for t in _steps_ticks(last)),
             *(f'<line x1="{PAD - 4}" y1="{y(t):.1f}" x2="{W - PAD / 2}" y2="{y(t):.1f}" stroke="#e3e3e3"/>'
               f'<text x="{PAD - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:.3g}</text>' for t in _log_ticks(lo, hi)),
             f'<line x1="{PAD}" y1="{y(base):.1f}" x2="{W - PAD / 2}" y2="{y(base):.1f}" stroke="#999" '
             f'stroke-dasharray="2,2"/>',
             _polyline(train, x, y, "#1f77b4"), _polyline(held, x, y, "#d62728", "5,3"),
             f'<text x="{W - PAD}" y="{PAD * 0.6 + 4}" text-anchor="end" fill="#1f77b4">training (interval mean)</text>',
             f'<text x="{W - PAD}" y="{PAD * 0.6 + 18}" text-anchor="end" fill="#d62728">held-out cells</text>',
             f'<text x="{W - PAD}" y="{PAD * 0.6 + 32}" text-anchor="end" fill="#777">baseline: '
             f'{escape(base_name)} ({base:.3g})</text>',
             "</svg>"]
    return "\n".join(parts) + "\n"
