"""Annotation: each feature's top genes tested against gene-set databases and gene networks, with a null.

- Set databases (GO, KEGG, Reactome, hallmark, TRRUST TF targets, any GMT): one-sided hypergeometric test of
  overlap, vectorized over all features x terms (overlaps by one sparse product, p-values looked up in a
  table of scipy's `hypergeom.sf` over the few distinct (list size, overlap, term size) triples).
- Networks (STRING, TRRUST edges): edges among the top genes against a degree-preserving null, the
  maximum-entropy graph whose expected degrees equal the real ones (checked against igraph's
  degree-preserving rewiring in the tests); the edge count is tested with a Poisson tail. A single edge
  between two hubs is therefore not a finding.
- Family for Benjamini-Hochberg: every feature x term test of one database in one layer (untested pairs
  with no overlap have p = 1 and still count in m).
- Null baseline: per layer, pseudo-features with exactly the real list sizes and the real number of lists
  each gene is in, genes otherwise shuffled across features, annotated the same way. The site reports the
  real rate beside this one.
- Label: the most significant set-database term (smallest q, then larger overlap, then smaller p, then name).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
from scipy.stats import hypergeom, poisson

from ..errors import AtlasError
from .genesets import GeneSets, Network, normalise_gene
from .multitest import bh, haldane_odds


ANY = "any database"  # the rates row of features annotated in at least one database


@dataclass(frozen=True)
class AnnotateConfig:
    top_n: int = 20        # top genes per feature taken into the test (rank < top_n)
    min_size: int = 5      # term size bounds, counted inside the universe
    max_size: int = 500
    alpha: float = 0.05    # BH level for a term to count as an enrichment
    seed: int = 0          # seed of the null pseudo-features
    block: int = 4096      # features per sparse product


def sf_table(N: int, K: np.ndarray, n: np.ndarray):
    """scipy's hypergeom.sf(k - 1, N, K, n) for every k <= max(n) and every distinct term size K and list size n.

    There are few distinct (k, K, n) triples, so a lookup in this table gives scipy's exact values for
    millions of tests at the cost of an index.
    """
    Ku, Ki = np.unique(np.asarray(K, np.int64), return_inverse=True)
    nu, ni = np.unique(np.asarray(n, np.int64), return_inverse=True)
    k = np.arange(int(nu.max(initial=0)) + 1)
    table = hypergeom.sf(k[:, None, None] - 1, N, Ku[None, :, None], nu[None, None, :])
    return table, Ki.ravel(), ni.ravel()


def membership(lists: list[list[int]], n_cols: int) -> sp.csr_matrix:
    """Binary rows x genes matrix from lists of gene indices."""
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    indices = np.fromiter((g for x in lists for g in x), dtype=np.int64, count=int(indptr[-1]))
    return sp.csr_matrix((np.ones(indices.size, np.float32), indices, indptr), shape=(len(lists), n_cols))


def set_tests(F: sp.csr_matrix, T: sp.csc_matrix, keep: float = 1.0, block: int = 4096):
    """Every feature x term hypergeometric test with overlap >= 1; returns (row, col, k, p) where p <= keep."""
    N = F.shape[1]
    n = np.asarray(F.sum(axis=1)).ravel().astype(np.int64)
    K = np.asarray(T.sum(axis=0)).ravel().astype(np.int64)
    table, Ki, ni = sf_table(N, K, n)
    out = [[], [], [], []]
    for start in range(0, F.shape[0], block):
        O = (F[start:start + block] @ T).tocoo()
        r, c, k = O.row.astype(np.int64) + start, O.col.astype(np.int64), np.rint(O.data).astype(np.int64)
        p = table[k, Ki[c], ni[r]]
        sel = p <= keep
        for acc, v in zip(out, (r[sel], c[sel], k[sel], p[sel])):
            acc.append(v)
    return tuple(np.concatenate(a) if a else np.zeros(0) for a in out)


def degree_fit(deg: np.ndarray, tol: float = 1e-10, max_iter: int = 2000) -> np.ndarray:
    """Fitness x per node of the maximum-entropy graph with these expected degrees (Park & Newman 2004).

    Pair (a, b) is linked with probability x_a x_b / (1 + x_a x_b), and every node's expected degree equals
    its observed one. Nodes of equal degree share x, so the fixed point runs over distinct degrees only.
    """
    deg = np.asarray(deg, dtype=np.float64)
    alive = deg > 0
    du, inv, cnt = np.unique(deg[alive], return_inverse=True, return_counts=True)
    x = du / np.sqrt(max(du @ cnt, 1.0))
    for _ in range(max_iter):
        P = x[:, None] * x[None, :]
        s = (cnt[None, :] * x[None, :] / (1 + P)).sum(axis=1) - x / (1 + x * x)  # no self-pair
        new = 0.5 * x + 0.5 * du / np.maximum(s, 1e-300)
        done = np.max(np.abs(new - x) / x, initial=0) < tol
        x = new
        if done:
            break
    out = np.zeros(deg.size)
    out[alive] = x[inv.ravel()]
    return out


def network_tests(F: sp.csr_matrix, A: sp.csr_matrix, block: int = 4096):
    """Edges among each row's genes, their expectation under the degree-preserving null, and the Poisson tail p.

    The sum of independent pair probabilities has a smaller variance than the Poisson of the same mean, so the
    Poisson tail errs towards larger p-values.
    """
    x = degree_fit(np.asarray(A.sum(axis=1)).ravel())
    e = np.asarray((F @ A).multiply(F).sum(axis=1)).ravel() / 2
    lam = np.zeros(F.shape[0])
    width = int(np.diff(F.indptr).max(initial=0))
    for start in range(0, F.shape[0], block):
        rows = F[start:start + block]
        X = np.zeros((rows.shape[0], width))
        lens = np.diff(rows.indptr)
        pos = np.arange(rows.nnz) - np.repeat(rows.indptr[:-1], lens)
        X[np.repeat(np.arange(rows.shape[0]), lens), pos] = x[rows.indices]
        XX = X[:, :, None] * X[:, None, :]
        lam[start:start + block] = np.triu(XX / (1 + XX), 1).sum(axis=(1, 2))
    p = np.where(e > 0, poisson.sf(e - 1, lam), 1.0)
    return e.astype(np.int64), lam, p


def null_lists(F: sp.csr_matrix, seed, rounds: int = 5) -> sp.csr_matrix:
    """Pseudo-features with exactly the rows' sizes and each gene's frequency, genes otherwise at random.

    Curveball trades (Strona et al. 2014): pair the rows at random; each pair keeps the genes it shares and
    deals the others out again at random, sizes unchanged. Every gene keeps its count across rows.
    """
    rng = np.random.default_rng(seed)
    rows = [F.indices[F.indptr[i]:F.indptr[i + 1]].tolist() for i in range(F.shape[0])]
    for _ in range(rounds):
        order = rng.permutation(len(rows))
        for a, b in zip(order[0::2], order[1::2]):
            A, B = set(rows[a]), set(rows[b])
            shared = A & B
            pool = sorted((A | B) - shared)
            if not pool:
                continue
            pool = [pool[i] for i in rng.permutation(len(pool))]
            n_a = len(A) - len(shared)
            rows[a] = sorted(shared.union(pool[:n_a]))
            rows[b] = sorted(shared.union(pool[n_a:]))
    return membership(rows, F.shape[1])


ENRICHMENTS = pa.schema([
    ("layer", pa.int16()), ("feature", pa.int32()), ("database", pa.string()), ("term", pa.string()),
    ("p", pa.float64()), ("q", pa.float64()), ("odds_ratio", pa.float64()), ("overlap", pa.int32()),
    ("overlap_genes", pa.list_(pa.string())), ("set_size", pa.int32()), ("edge_density", pa.float64())])


@dataclass
class Annotation:
    enrichments: pa.Table   # significant tests (q <= alpha)
    labels: pa.Table        # layer, feature, n_enrichments, label, label_database, label_q
    rates: pa.Table         # layer, database, n_features, annotated, null_annotated
    meta: dict


def _table_layers(genes: pd.DataFrame, cfg: AnnotateConfig):
    missing = [c for c in ("layer", "feature", "gene", "rank") if c not in genes.columns]
    if missing:
        raise AtlasError(f"gene table: missing column(s) {', '.join(missing)} (needs layer, feature, gene, rank)")
    g = genes[genes["rank"] < cfg.top_n].copy()
    g["gene"] = [normalise_gene(x) for x in g["gene"].astype(str)]
    return g.dropna(subset=["gene"]).sort_values(["layer", "feature", "rank"], kind="stable")


def annotate(genes: pd.DataFrame, databases: list[GeneSets], networks: list[Network] = (),
             universe: dict[int, list[str]] | list[str] | None = None,
             cfg: AnnotateConfig = AnnotateConfig()) -> Annotation:
    """Annotate every (layer, feature) of `genes` (columns layer, feature, gene, rank).

    `universe`: the genes the model could see in the data (per layer or one list); default the union of the
    table's genes, which is smaller than the real universe and therefore conservative.
    """
    for sample in genes["gene"].astype(str).head(1000):
        if sample.isdigit():
            raise AtlasError(f"gene table: gene {sample!r} looks like an Entrez id (a number); gene symbols or "
                             "Ensembl ids were expected")
    table = _table_layers(genes, cfg)
    enrich, labels, rates = [], [], []
    meta = {"config": asdict(cfg), "layers": {}, "databases": {}}
    for db in list(databases) + list(networks):
        meta["databases"][db.name] = {k: v for k, v in db.meta.items()} | {
            "kind": "gene sets" if isinstance(db, GeneSets) else "network",
            "terms" if isinstance(db, GeneSets) else "edges": len(db.terms) if isinstance(db, GeneSets)
            else len(db.edges)}
    for layer, part in table.groupby("layer", sort=True):
        uni = universe.get(int(layer)) if isinstance(universe, dict) else universe
        res = _annotate_layer(int(layer), part, databases, networks, uni, cfg, meta)
        enrich.append(res[0])
        labels.append(res[1])
        rates.extend(res[2])
    enrichments = pd.concat(enrich, ignore_index=True) if enrich else _empty_enrichments()
    lab = pd.concat(labels, ignore_index=True) if labels else pd.DataFrame(
        columns=["layer", "feature", "n_enrichments", "label", "label_database", "label_q"])
    enrichments = enrichments[enrichments["feature"].notna()] if len(enrichments) else enrichments
    return Annotation(pa.Table.from_pandas(enrichments, schema=ENRICHMENTS, preserve_index=False)
                      if len(enrichments) else ENRICHMENTS.empty_table(),
                      pa.Table.from_pandas(lab, preserve_index=False),
                      pa.Table.from_pylist(rates) if rates else pa.table({"layer": pa.array([], pa.int16())}), meta)


def _empty_enrichments() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in [
        ("layer", "int16"), ("feature", "int32"), ("database", object), ("term", object), ("p", "float64"),
        ("q", "float64"), ("odds_ratio", "float64"), ("overlap", "int32"), ("overlap_genes", object),
        ("set_size", "int32"), ("edge_density", "float64")]})


def _annotate_layer(layer, part, databases, networks, uni, cfg, meta):
    if uni is None:
        names = sorted(set(part["gene"]))
    else:
        names = sorted({g for x in uni if (g := normalise_gene(x))})
        part = part[part["gene"].isin(set(names))]
    index = {g: i for i, g in enumerate(names)}
    feats, lists = [], []
    for f, grp in part.groupby("feature", sort=True):
        feats.append(int(f))
        lists.append(sorted({index[g] for g in grp["gene"]}))
    feats = np.asarray(feats, dtype=np.int64)
    N = len(names)
    F = membership(lists, N)
    F_null = null_lists(F, seed=(cfg.seed, layer))
    gene_names = np.asarray(names, dtype=object)
    frames, rates, null_hit = [], [], set()
    info = meta["layers"].setdefault(str(layer), {"universe": N, "features": int(feats.size), "databases": {}})
    for db in databases:
        T, terms, sizes = _term_matrix(db, index, N, cfg)
        m = F.shape[0] * len(terms)
        info["databases"][db.name] = {"terms_tested": len(terms), "tests": m}
        hits, n_null = [], 0
        for which, M in (("real", F), ("null", F_null)):
            r, c, k, p = set_tests(M, T, keep=cfg.alpha, block=cfg.block)
            q = bh(p, m)
            sel = q <= cfg.alpha
            if which == "null":
                n_null = np.unique(r[sel]).size
                null_hit.update(r[sel].tolist())
                continue
            r, c, k, p, q = r[sel], c[sel], k[sel], p[sel], q[sel]
            n_i = np.diff(F.indptr)[r]
            K = sizes[c]
            hits = pd.DataFrame({
                "layer": layer, "feature": feats[r], "database": db.name, "term": np.asarray(terms, object)[c],
                "p": p, "q": q, "odds_ratio": haldane_odds(k, n_i, K, N), "overlap": k,
                "overlap_genes": [sorted(gene_names[np.intersect1d(F.indices[F.indptr[i]:F.indptr[i + 1]],
                                                                    T.indices[T.indptr[j]:T.indptr[j + 1]])])
                                  for i, j in zip(r, c)],
                "set_size": K, "edge_density": np.nan})
        frames.append(hits)
        rates.append(_rate(layer, db.name, feats.size, hits, n_null))
    for net in networks:
        A = _adjacency(net, index, N)
        info["databases"][net.name] = {"edges_in_universe": int(A.nnz // 2), "tests": int(F.shape[0])}
        e, lam, p = network_tests(F, A, cfg.block)
        q = bh(p, p.size)
        _, _, p0 = network_tests(F_null, A, cfg.block)
        hit0 = np.flatnonzero(bh(p0, p0.size) <= cfg.alpha)
        n_null = int(hit0.size)
        null_hit.update(hit0.tolist())
        sel = np.flatnonzero(q <= cfg.alpha)
        n_i = np.diff(F.indptr)[sel]
        linked = F[sel].multiply(F[sel] @ A)
        hits = pd.DataFrame({
            "layer": layer, "feature": feats[sel], "database": net.name, "term": "edges among top genes",
            "p": p[sel], "q": q[sel], "odds_ratio": np.nan, "overlap": e[sel],
            "overlap_genes": [sorted(gene_names[linked.indices[linked.indptr[i]:linked.indptr[i + 1]]])
                              for i in range(sel.size)],
            "set_size": n_i, "edge_density": e[sel] / np.maximum(n_i * (n_i - 1) / 2, 1)})
        frames.append(hits)
        rates.append(_rate(layer, net.name, feats.size, hits, n_null))
    enr = pd.concat(frames, ignore_index=True) if frames else _empty_enrichments()
    enr = enr.astype({"layer": "int16", "feature": "int32", "overlap": "int32", "set_size": "int32"})
    enr = enr.sort_values(["layer", "feature", "database", "term"], kind="stable", ignore_index=True)
    rates.append({"layer": layer, "database": ANY, "n_features": int(feats.size),
                  "annotated": int(enr["feature"].nunique()), "null_annotated": len(null_hit)})
    return enr, _labels(layer, feats, enr, {d.name for d in databases}), rates


def _rate(layer, name, n_features, hits, n_null):
    return {"layer": layer, "database": name, "n_features": int(n_features),
            "annotated": int(hits["feature"].nunique()), "null_annotated": int(n_null)}


def _labels(layer, feats, enr, set_dbs) -> pd.DataFrame:
    count = enr.groupby("feature").size()
    cand = enr[enr["database"].isin(set_dbs)].assign(neg_overlap=lambda d: -d["overlap"])
    best = (cand.sort_values(["feature", "q", "neg_overlap", "p", "database", "term"], kind="stable")
            .drop_duplicates("feature").set_index("feature"))
    out = pd.DataFrame({"layer": np.int16(layer), "feature": feats.astype(np.int32)})
    out["n_enrichments"] = out["feature"].map(count).fillna(0).astype("int32")
    out["label"] = out["feature"].map(best["term"])
    out["label_database"] = out["feature"].map(best["database"])
    out["label_q"] = out["feature"].map(best["q"])
    return out


def _term_matrix(db: GeneSets, index: dict[str, int], N: int, cfg: AnnotateConfig):
    """Genes x terms membership, terms restricted to the universe and kept if min_size <= size <= max_size."""
    lists, terms = [], []
    for term, genes in zip(db.terms, db.genes):
        inside = sorted({index[g] for g in genes if g in index})
        if cfg.min_size <= len(inside) <= cfg.max_size:
            lists.append(inside)
            terms.append(term)
    T = membership(lists, N).T.tocsc()
    return T, terms, np.diff(T.indptr).astype(np.int64)


def _adjacency(net: Network, index: dict[str, int], N: int) -> sp.csr_matrix:
    pairs = np.array([(index[a], index[b]) for a, b in net.edges if a in index and b in index],
                     dtype=np.int64).reshape(-1, 2)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    A = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(N, N))
    A.data[:] = 1.0
    return A


def read_gene_table(path, layer: int | None = None) -> pd.DataFrame:
    """A (layer, feature, gene, rank) table from Parquet, CSV or TSV; `layer` fills a missing layer column."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise AtlasError(f"{path}: no such file")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep="\t" if path.suffix in (".tsv", ".txt") else ",")
    except Exception as e:  # pyarrow and pandas raise many kinds; the user needs the file and the reason
        raise AtlasError(f"{path}: cannot read as a table ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if "layer" not in df.columns and layer is not None:
        df["layer"] = layer
    missing = [c for c in ("layer", "feature", "gene", "rank") if c not in df.columns]
    if missing:
        raise AtlasError(f"{path}: missing column(s) {', '.join(missing)} (needs layer, feature, gene, rank"
                         + ("; --layer fills layer" if missing == ["layer"] else "") + ")")
    # The atlas stores layer as int16 and feature as int32; rows are counted as in the file (header = row 1).
    for col, hi in (("layer", 2**15 - 1), ("feature", 2**31 - 1), ("rank", 2**15 - 1)):
        num = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero((num.isna() | (num % 1 != 0) | (num < 0) | (num > hi)).to_numpy())
        if bad.size:
            value = df[col].iloc[bad[0]]
            raise AtlasError(f"{path}: column {col!r} must hold whole numbers from 0 to {hi} "
                             f"(row {int(bad[0]) + 2}: {getattr(value, 'item', lambda: value)()!r})")
        df[col] = num.astype(np.int64)
    df["gene"] = df["gene"].astype(str)
    digits = df["gene"].str.fullmatch(r"\d+")
    if digits.any():
        i = int(np.flatnonzero(digits.to_numpy())[0])
        raise AtlasError(f"{path}: row {i + 2}: gene {df['gene'].iloc[i]!r} looks like an Entrez id (a number); "
                         "gene symbols or Ensembl ids were expected")
    return df


def write_annotation(out, ann: Annotation) -> None:
    """OUT/: enrichments, labels and rates as Parquet, annotate.json with parameters and database sources."""
    import pyarrow.parquet as pq

    from ..jsonio import dumps_json
    from ..fsutil import atomic_dir

    with atomic_dir(out) as tmp:
        for name in ("enrichments", "labels", "rates"):
            pq.write_table(getattr(ann, name), tmp / f"{name}.parquet", compression="zstd")
        (tmp / "annotate.json").write_bytes(dumps_json(ann.meta, indent=True))
