"""Pass 2, the streaming map over cell shards: model forward with every layer at once, SAE encode of every
layer, and per shard only codes plus the small sums that need dense activations (dense.py). Dense activations
exist only per batch in memory; codes go straight into their files.

Stage folder STREAM/:
  shards/NNNNN/    one per shard, committed atomically: codes (codes.py) and LL.dense.npz (dense.py)
  fold/LL-NNNNN.npz  the running total of layer LL's dense sums over the first NNNNN shards (dense.py)
  merged/          layer_LL.npz: the merged dense sums, principal axes and gene projections; stream.json
A killed build resumes at the first shard without a folder; finished shards are never recomputed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ...errors import AtlasError
from ..cache import commit_once, is_done, key_of
from ..codes import Codes, allocate, index_dtype, read_layer, read_tokens, shard_name, shard_units
from ..model import dense
from ..model.dense import heldout_metrics, partial_name, read_dense
from ..model.forward import ModelRunner, ModelSpec, ahead
from ..stage import MapStage
from .plan import read_plan
from ..sae.topk import load_sae


class DenseSums:
    """The sums of one layer over one shard that need dense activations (dense.py names them)."""

    def __init__(self, d: int, n_features: int, n_genes: int):
        z = np.zeros
        self.v = {"n": z(()), "s1": z(d), "h_n": z(()), "h_sse": z(()), "h_s1": z(d), "h_s2": z(()),
                  "h_xtx": z((d, d)), "h_fire": z(n_features), "h_l0": z(()), "h_za": z((n_features, d)),
                  "h_a1": z(n_features), "h_a2": z(n_features)}
        self.gene_n = np.zeros(n_genes, np.int64)
        self.gene_sum = torch.zeros(n_genes, d, dtype=torch.float32)

    @torch.no_grad()
    def add(self, x: torch.Tensor, v: torch.Tensor, i: torch.Tensor, held: np.ndarray, gidx: np.ndarray, sae):
        """Add one batch; raise if x holds NaN or infinity (its column sums show it, at no extra cost)."""
        # Sums over tokens run in numpy (pairwise, one thread) and products as GEMMs, so the result does not
        # depend on the thread count of the worker: local and Ray give the same bytes.
        s, xn = self.v, x.numpy()
        col = xn.sum(0, dtype=np.float64)
        if not np.isfinite(col).all():
            raise AtlasError("NaN or infinite activations")
        s["n"] += len(xn)
        s["s1"] += col
        self.gene_sum.index_add_(0, torch.from_numpy(gidx), x)  # a cell holds each gene once: no two rows collide
        np.add.at(self.gene_n, gidx, 1)
        if held.any():
            self._heldout(xn[held], v.numpy()[held], i.numpy()[held], sae)

    def _heldout(self, xh: np.ndarray, vh: np.ndarray, ih: np.ndarray, sae) -> None:
        s = self.v
        err = (xh - sae.reconstruct(vh, ih)).astype(np.float64)
        xd = xh.astype(np.float64)
        s["h_n"] += len(xh)
        s["h_sse"] += float(np.sum(err * err))
        s["h_s1"] += xd.sum(0)
        s["h_s2"] += float(np.sum(xd * xd))
        s["h_xtx"] += xd.T @ xd
        on = vh > 0
        rows = np.broadcast_to(np.arange(len(vh))[:, None], vh.shape)[on]
        f, a = ih[on].astype(np.int64), vh[on].astype(np.float64)
        n_f = s["h_fire"].shape[0]
        s["h_fire"] += np.bincount(f, minlength=n_f)
        s["h_l0"] += int(on.sum())
        s["h_a1"] += np.bincount(f, a, n_f)
        s["h_a2"] += np.bincount(f, a * a, n_f)
        s["h_za"] += sp.csr_matrix((a, (f, rows)), shape=(n_f, len(xd))) @ xd  # sum of a_f x per feature

    def save(self, path: Path, gene_ids: np.ndarray) -> None:
        np.savez(path, gene_ids=gene_ids, gene_n=self.gene_n, gene_sum=self.gene_sum.numpy(), **self.v)


def dictionary_name(layer: int, name: str) -> str:
    """A shard's top-gene sums of layer `layer` under the untrained dictionary `name`."""
    return f"{layer:02d}.{name}.npz"


class DictionarySums:
    """What the random_dictionary baseline needs of one layer over one shard: the top-gene sums (statistics.
    features.map_layer's feature x gene part) of the codes an untrained dictionary gives the same activations.
    Codes are buffered and summed every FLUSH tokens, so memory stays bounded whatever the shard size."""

    FLUSH = 65_536

    def __init__(self, n_features: int, n_genes: int):
        self.n_features, self.n_genes = n_features, n_genes
        self.parts: list[dict] = []
        self.buf: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.buffered = 0

    def add(self, v: torch.Tensor, i: torch.Tensor, genes: np.ndarray) -> None:
        self.buf.append((i.numpy().astype(np.int64), v.numpy(), np.asarray(genes, np.int64)))
        self.buffered += len(genes)
        if self.buffered >= self.FLUSH:
            self._flush()

    def _flush(self) -> None:
        from ..statistics import kernels

        if not self.buf:
            return
        idx, val, gene = (np.concatenate(x) for x in zip(*self.buf))
        fg = dict(zip(("fg_key", "fg_n", "fg_sum", "fg_sq"),
                      kernels.feature_gene_sums(idx, val, gene, self.n_features, self.n_genes)))
        ids, n = np.unique(gene, return_counts=True)
        fire = np.bincount(idx[val > 0], minlength=self.n_features)
        self.parts.append({"tokens": np.int64(len(gene)), "fire": fire, "gene_ids": ids, "gene_n": n, **fg})
        self.buf, self.buffered = [], 0

    def save(self, path: Path) -> None:
        from ..statistics import features as st

        self._flush()
        np.savez(path, **st.merge(self.parts, 0))


class StreamWorker:
    """Loads the model and the SAEs once; `worker(shard)` writes STREAM/shards/NNNNN/ and returns its tokens."""

    def __init__(self, spec: ModelSpec, saes: dict, plan_dir: str, out: str, dictionaries: dict | None = None):
        self.runner = ModelRunner(spec)
        self.saes = {int(L): load_sae(Path(p)).eval() for L, p in saes.items()}
        # {layer: {baseline name: SAE folder}}: untrained dictionaries encoding the same activations
        self.dictionaries = {int(L): {n: load_sae(Path(p)).eval() for n, p in d.items()}
                             for L, d in (dictionaries or {}).items()}
        self.plan, cells = read_plan(Path(plan_dir))
        self.held = cells["heldout"].to_numpy()
        self.out = Path(out)

    def __call__(self, shard: int) -> int:
        target = self.out / "shards" / shard_name(shard)
        start, stop, tokens = self.plan["shards"][shard]
        if is_done(target):
            return tokens
        ad = self.runner.adapter
        special = np.fromiter(ad.special_ids, np.int64)
        ids = np.unique(np.concatenate([ad.tokenize(self.runner.prepared, c).ids for c in range(start, stop)]))
        genes = ids[~np.isin(ids, special)]
        with commit_once(target) as tmp:
            cell, gene = allocate(tmp / "cell.npy", np.int32, (tokens,)), allocate(tmp / "gene.npy", np.int32, (tokens,))
            codes = {L: (allocate(tmp / f"{L:02d}.idx.npy", index_dtype(sae.d_sae), (tokens, sae.k)),
                         allocate(tmp / f"{L:02d}.val.npy", np.float32, (tokens, sae.k))) for L, sae in self.saes.items()}
            sums = {L: DenseSums(ad.width, sae.d_sae, len(genes)) for L, sae in self.saes.items()}
            dsums = {(L, n): DictionarySums(d.d_sae, self.plan["vocab_size"]) for L, ds in self.dictionaries.items()
                     for n, d in ds.items()}
            row = self._run(start, stop, tokens, genes, cell, gene, codes, sums, dsums)
            if row != tokens:
                raise AtlasError(f"cells {start}..{stop - 1}: the model gave {row} gene tokens, the plan counted {tokens}")
            for a in [cell, gene, *(x for pair in codes.values() for x in pair)]:
                if isinstance(a, np.memmap):
                    a.flush()
            del cell, gene, codes
            for L in self.saes:
                sums[L].save(tmp / partial_name(L), genes)
            for (L, n), d in dsums.items():
                d.save(tmp / dictionary_name(L, n))
        return tokens

    @torch.no_grad()
    def _run(self, start, stop, tokens, genes, cell, gene, codes, sums, dsums) -> int:
        """Stream the shard's cells through the model and the SAEs; write codes row by row. Returns the rows."""
        row = 0
        for chunk in ahead(self.runner.run(range(start, stop))):  # the next batch's forward beside this encode
            n = len(chunk.cells)
            if n == 0:
                continue
            if row + n > tokens:
                raise AtlasError(f"cells {start}..{stop - 1}: the model gives more gene tokens than the plan counted")
            cell[row:row + n], gene[row:row + n] = chunk.cells, chunk.genes
            held = self.held[chunk.cells]
            gidx = np.searchsorted(genes, chunk.genes)
            for L, sae in self.saes.items():
                x = torch.from_numpy(chunk.acts[L])
                v, i = sae.encode(x)
                try:
                    sums[L].add(x, v, i, held, gidx, sae)
                except AtlasError as e:
                    raise AtlasError(f"layer {L}: {e} in cells {start}..{stop - 1}") from None
                if not np.isfinite(v.numpy().sum(dtype=np.float64)):
                    raise AtlasError(f"layer {L}: the SAE gives NaN or infinite codes in cells {start}..{stop - 1}")
                codes[L][0][row:row + n], codes[L][1][row:row + n] = i.numpy(), v.numpy()
                for name, d in self.dictionaries.get(L, {}).items():
                    dsums[L, name].add(*d.encode(x), chunk.genes)
            row += n
        return row


@dataclass(frozen=True)
class Stream:
    """The stream stage's outputs: code shards (codes.read_layer) and the merged dense sums per layer."""

    folder: Path

    def dense(self, layer: int) -> dict:
        return read_dense(self.folder, layer)

    def heldout(self, layer: int) -> dict:
        """Variance explained, L0 and dead features of the layer's SAE over the held-out cells."""
        return heldout_metrics(self.dense(layer))

    def shards(self) -> list[Path]:
        """The shard folders in cell order (a shard holds consecutive cells)."""
        return sorted(p for p in (self.folder / "shards").iterdir() if p.is_dir() and not p.name.startswith("."))

    def codes(self, layer: int) -> Iterator[Codes]:
        """The layer's codes, shard by shard (memory-mapped: one shard's tokens at a time)."""
        for shard in self.shards():
            yield read_layer(shard, layer)

    def gene_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """(token id, its tokens in the data) of every gene that has one, over every shard."""
        counts = np.zeros(0, np.int64)
        for shard in self.shards():
            c = np.bincount(read_tokens(shard)[1].astype(np.int64))
            counts = np.pad(counts, (0, max(0, c.size - counts.size)))
            counts[:c.size] += c
        ids = np.flatnonzero(counts)
        return ids, counts[ids]

    def dictionary(self, layer: int, name: str) -> dict:
        """The top-gene sums of an untrained dictionary over every shard (DictionarySums), merged in shard order;
        statistics.features.top_genes reads them as it reads the SAE's."""
        from ..statistics import features as st

        parts = []
        for shard in self.shards():
            with np.load(shard / dictionary_name(layer, name)) as z:
                parts.append({k: z[k] for k in z.files})
        return st.merge(parts, 0)


def dictionaries(b) -> dict:
    """{layer: {name: SAE folder}} of the untrained dictionaries the stream encodes with: those of the SAE stage
    when the random_dictionary baseline runs, else none."""
    return {} if b.decided.get("random_dictionary") else b.results["sae"].dictionaries


class StreamStage(MapStage):
    name = "stream"
    worker = StreamWorker

    def key(self, b) -> str:
        extra = [sorted(dictionaries(b)[b.layers[0]])] if dictionaries(b) else []  # keys of old builds stay valid
        return key_of("stream", b.results["plan"].key, b.layers, b.results["sae"].keys, b.cfg.batch_size, *extra)

    def units(self, b) -> list[tuple[str, int]]:
        return shard_units(b.results["plan"].record)

    def kwargs(self, b, folder: Path) -> dict:
        return {"spec": b.spec, "saes": {L: str(p) for L, p in b.results["sae"].paths.items()},
                "plan_dir": str(b.results["plan"].folder), "out": str(folder),
                "dictionaries": {L: {n: str(p) for n, p in d.items()} for L, d in dictionaries(b).items()}}

    def on_unit(self, b, folder: Path) -> None:
        dense.fold(folder, b.layers, len(b.results["plan"].record["shards"]), b.cfg.keep_partials)

    def finish(self, b, folder: Path) -> None:
        dense.finalize(folder, b.layers, len(b.results["plan"].record["shards"]), b.cfg.keep_partials)

    def read(self, folder: Path) -> Stream:
        return Stream(Path(folder))
