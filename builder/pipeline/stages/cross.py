"""The cross stage, per adjacent pair of layers: cross-layer edges beyond the within-gene null and
decoder-cosine matches (graphs/).

Stage folder CROSS-LL-MM/: cross.npz (edges a, b, count, log_ratio, p; matches cos_a, cos_b, cos) and cross.json
(counts and rates). read() gives Cross.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...jsonio import dumps_json
from ..cache import key_of
from ..graphs import modules as graphs
from ..stage import LayerStage, folder_key
from .graph import decoder


@dataclass(frozen=True)
class Cross:
    folder: Path
    arrays: dict
    summary: dict  # raw_edges, expected_raw_edges, edges, tested, decoder_matches


class CrossStage(LayerStage):
    name = "cross"

    def units(self, b) -> list[tuple[int, int]]:
        return list(zip(b.layers, b.layers[1:]))

    def key(self, b, unit) -> str:
        a, c = unit
        keys = b.results["sae"].keys
        return key_of("cross", folder_key(b.results["stats"].folder), keys[a], keys[c], asdict(b.cfg.graphs))

    def run(self, b, unit, out: Path) -> None:
        a, c = unit
        stats, G = b.results["stats"], b.results["plan"].record["vocab_size"]
        fa = stats.table(a, "features")["fire_count"].to_numpy()
        fb = stats.table(c, "features")["fire_count"].to_numpy()
        A, n_g = graphs.gene_firing(stats.counts(a), len(fa), G)
        B, _ = graphs.gene_firing(stats.counts(c), len(fb), G)
        E = graphs.within_gene_expectation(A, B, n_g)
        cx = stats.cross(a, c)
        C = graphs.count_matrix(cx["key"], cx["n"], len(fa), len(fb))
        res = graphs.cross_layer(C, E, fa, fb, int(n_g.sum()), b.cfg.graphs)
        paths = b.results["sae"].paths
        ia, ib, cos = graphs.decoder_matches(decoder(paths[a]), decoder(paths[c]), b.cfg.graphs.cosine)
        np.savez(out / "cross.npz", a=res["a"], b=res["b"], count=res["count"], log_ratio=res["log_ratio"], p=res["p"],
                 cos_a=ia, cos_b=ib, cos=cos)
        d = b.width
        expected = graphs.random_matches(len(fa), len(fb), d, b.cfg.graphs.cosine)
        (out / "cross.json").write_bytes(dumps_json(
            {k: res[k] for k in ("raw_edges", "expected_raw_edges", "edges", "tested")}
            | {"decoder_matches": int(ia.size), "expected_decoder_matches": expected}, indent=True))

    def read(self, folder: Path) -> Cross:
        folder = Path(folder)
        with np.load(folder / "cross.npz") as z:
            arrays = {k: z[k] for k in z.files}
        return Cross(folder, arrays, json.loads((folder / "cross.json").read_text()))
