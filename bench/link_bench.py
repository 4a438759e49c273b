"""Cost of `atlas link` at Geneformer x scGPT scale: 82,944 x 24,576 features (18 layers x 4,608 against 12 x 2,048,
each with its untrained twin) over 2,000 shared cells, every pair of layers.

    PYTHONPATH=. python bench/link_bench.py [--cells 2000] [--a 18x4608] [--b 12x2048] [--density 1.0]
                                            [--baseline-pairs 2] [--block 1024]

The profiles are synthetic (gamma values, `--density` of them non-zero: 1.0 is what top-k codes give over hundreds of
tokens per cell: the demo atlases' profiles are 99.9% non-zero), 8 cell types, with one planted program per pair of
first layers (so the run is checked, not only timed). They go through the command's own code: ProfileStore (on
disk, one pair's four profiles in memory) and link_layers (the streamed correlation both ways, both twins, the
shuffle moments and Williams' test of every kept partner).

Baseline, in the same run, on the first `--baseline-pairs` pairs of layers: the simple way, the whole correlation
matrix of the pair at once (np.corrcoef of the two layers' dense profiles, (Fa + Fb)^2 values) and the top partners
sorted out of it, main product only (no twins, no tests). Printed: seconds and peak memory per pair for both, their
ratios, the partners' agreement, and the memory the simple way would need for all features at once.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.pipeline.links.correlate import correlate  # noqa: E402
from builder.pipeline.links.run import link_layers  # noqa: E402
from builder.pipeline.links.store import ProfileStore  # noqa: E402


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def synthetic(rng, cells: int, width: int, density: float, program: np.ndarray | None, column: int) -> sp.csc_matrix:
    X = rng.gamma(1.0, 0.2, (cells, width)).astype(np.float64)
    if density < 1:
        X *= rng.random((cells, width)) < density
    if program is not None:
        X[:, column] = program + 0.3 * rng.random(cells)
    return sp.csc_matrix(X)


def simple_top(X: np.ndarray, Y: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: every correlation of the pair at once, then each row's best `top`."""
    fa = X.shape[1]
    C = np.corrcoef(X.T, Y.T)[:fa, fa:]
    return np.argsort(-C, axis=1, kind="stable")[:, :top], C


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--a", default="18x4608")
    ap.add_argument("--b", default="12x2048")
    ap.add_argument("--density", type=float, default=1.0)
    ap.add_argument("--baseline-pairs", type=int, default=2)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--top", type=int, default=3)
    args = ap.parse_args()
    (na, wa), (nb, wb) = (tuple(map(int, s.split("x"))) for s in (args.a, args.b))
    n, rng = args.cells, np.random.default_rng(0)
    groups = np.arange(n) % 8
    print(f"atlas link benchmark: {na} x {wa} = {na * wa:,} features against {nb} x {wb} = {nb * wb:,}, each with its "
          f"untrained twin, {n:,} cells, density {args.density:g}, block {args.block}")
    with tempfile.TemporaryDirectory(prefix="link-bench-") as tmp:
        store = ProfileStore(Path(tmp), groups, 8, 10)
        t0 = time.perf_counter()
        programs = {}
        for side, layers, width in (("A", na, wa), ("At", na, wa), ("B", nb, wb), ("Bt", nb, wb)):
            for L in range(layers):
                prog = None
                if side in ("A", "B") and L == 0:  # one planted program between the first layers
                    prog = programs.setdefault(0, rng.gamma(2.0, 1.0, n))
                store.put(side, L, synthetic(rng, n, width, args.density, prog, 7 if side == "A" else 11))
        made = time.perf_counter() - t0
        disk = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e9
        print(f"profiles made and stored: {made:.0f} s, {disk:.1f} GB on disk")

        reset_peak()
        base_rss = rss_mb()
        times = []

        def get(side, L):
            return store.get(side, L)

        def log(msg):
            times.append(time.perf_counter())

        t0 = time.perf_counter()
        mine, theirs, _, _ = link_layers(get, list(range(na)), list(range(nb)), args.top, args.block, False, log)
        total = time.perf_counter() - t0
        peak = peak_mb() - base_rss
        pairs = na * nb
        rows = sum(len(m) for m in mine) + sum(len(t) for t in theirs)
        first = mine[0]
        hit = first[(first["feature"] == 7) & (first["rank"] == 1)]["other_feature"].tolist()
        print(f"streamed (atlas link, both directions, both twins, tests): {total:.0f} s for {pairs} pairs of layers "
              f"({total / pairs:.2f} s per pair), peak memory above the start {peak:,.0f} MB, {rows:,} rows kept; "
              f"planted partner found: {hit == [11]}")

        k = min(args.baseline_pairs, pairs)
        ours, simple, ours_mem, simple_mem, agree = [], [], [], [], []
        for i in range(k):
            La, Lb = divmod(i, nb)
            P, Q = store.get("A", La), store.get("B", Lb)
            reset_peak()
            before = rss_mb()
            t0 = time.perf_counter()
            fwd, _ = correlate(P, Q, args.top, args.block)
            ours.append(time.perf_counter() - t0)
            ours_mem.append(peak_mb() - before)
            X, Y = np.asarray(P.X), np.asarray(Q.X)
            reset_peak()
            before = rss_mb()
            t0 = time.perf_counter()
            idx, C = simple_top(X, Y, args.top)
            simple.append(time.perf_counter() - t0)
            simple_mem.append(peak_mb() - before)
            agree.append(float((idx == fwd.idx).mean()))
            del C
        print(f"main product of one pair ({wa} x {wb}), {k} pairs: streamed {np.mean(ours):.2f} s, {np.mean(ours_mem):,.0f}"
              f" MB; whole matrix (np.corrcoef) {np.mean(simple):.2f} s, {np.mean(simple_mem):,.0f} MB; ratio "
              f"time {np.mean(simple) / np.mean(ours):.2f}x, memory {np.mean(simple_mem) / max(np.mean(ours_mem), 1):.1f}x "
              f"in favour of streaming; partners agree {np.mean(agree):.1%}")
        print(f"the whole matrix for all features at once would hold {na * wa:,} x {nb * wb:,} float64 = "
              f"{na * wa * nb * wb * 8 / 1e9:,.1f} GB (and with the twins, three times that)")


if __name__ == "__main__":
    main()
