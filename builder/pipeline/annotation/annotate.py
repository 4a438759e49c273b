"""Annotation: each feature's top genes tested against gene-set databases and gene networks, beside baselines.

- Tests (enrichment.py): a hypergeometric set test per list x term, an edge-count network test per list.
- One FDR family per layer: every set-database test (lists x terms) and every network test (one per list) of
  the layer is pooled into one Benjamini-Hochberg family. Labels, per-database rates and the "any database"
  rate all come from that family, so a label from a 50-term database and one from a 5,000-term database are
  held to the same standard, and the any-database rate is not a union of separately controlled families.
- Universe: the genes that could have entered a top list (for a build, the genes with at least `min_support`
  tokens in the data). Terms are restricted to it; list genes outside it are dropped and counted.
- Baselines (baselines.py): gene lists made without the SAE, tested the same way; rows for `null_baseline`.
- Label: the most significant set-database term (smallest q, then larger overlap, then smaller p, then name).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from ...errors import AtlasError
from .baselines import Baseline, curveball, matrix_lists
from .enrichment import SfTable, degree_fit, network_tests, overlap_members, set_tests
from .genesets import GeneSets, Network, normalise_gene
from ..multitest import bh, clopper_pearson, haldane_odds

ANY = "any database"  # the rates row of features annotated in at least one database
RANDOM_GENES_NOTE = ("random_genes: the features' own lists with genes dealt out again at random (curveball), "
                     "each list keeping its size and each gene its number of lists")


@dataclass(frozen=True)
class AnnotateConfig:
    top_n: int = 20          # genes per list in the tests: rank <= top_n (ranks start at 1)
    min_size: int = 5        # term size bounds, counted inside the universe
    max_size: int = 500
    alpha: float = 0.05      # BH level over the pooled family of a layer
    seed: int = 0            # seed of the random_genes baseline
    random_genes: bool = True  # the frequency-matched random-list baseline (as costly as the features)
    block: int = 4096        # lists per sparse product


ENRICHMENTS = pa.schema([
    ("layer", pa.int16()), ("feature", pa.int32()), ("database", pa.string()), ("term", pa.string()),
    ("p", pa.float64()), ("q", pa.float64()), ("odds_ratio", pa.float64()), ("overlap", pa.int32()),
    ("overlap_genes", pa.list_(pa.string())), ("set_size", pa.int32()), ("edge_density", pa.float64())])
LABELS = pa.schema([("layer", pa.int16()), ("feature", pa.int32()), ("n_enrichments", pa.int32()),
                    ("label", pa.string()), ("label_database", pa.string()), ("label_q", pa.float64())])
RATES = pa.schema([("layer", pa.int16()), ("database", pa.string()), ("n_features", pa.int32()),
                   ("annotated", pa.int32()), ("null_annotated", pa.int32())])
BASELINE_ROWS = pa.schema([("layer", pa.int16()), ("analysis", pa.string()), ("measure", pa.string()),
                           ("baseline", pa.string()), ("observed", pa.float64()), ("expected", pa.float64()),
                           ("note", pa.string()), ("observed_n", pa.int32()), ("expected_n", pa.int32()),
                           ("observed_lo", pa.float64()), ("observed_hi", pa.float64()),
                           ("expected_lo", pa.float64()), ("expected_hi", pa.float64())])


@dataclass
class Annotation:
    enrichments: pa.Table   # tests with pooled q <= alpha
    labels: pa.Table        # layer, feature, n_enrichments, label, label_database, label_q
    rates: pa.Table         # layer, database, n_features, annotated, null_annotated (= random_genes)
    baselines: pa.Table     # rows of the atlas null_baseline table, one per layer x database x baseline
    meta: dict = field(default_factory=dict)
    folder: Path | None = None  # where it was read from (read_annotation)


class _Universe:
    """One gene universe made ready for testing: gene index, term matrices, networks, the p-value table."""

    def __init__(self, names: list[str], databases, networks, cfg: AnnotateConfig):
        if not names:
            raise AtlasError("universe: no genes (give the genes that could enter a top list)")
        self.names = np.asarray(names, dtype=object)
        self.index = pd.Index(names)
        self.N = N = len(names)
        self.sets = [(db.name, *_term_matrix(db, self.index, N, cfg)) for db in databases]
        self.nets = []
        for net in networks:
            A = _adjacency(net, self.index, N)
            self.nets.append((net.name, A, degree_fit(np.asarray(A.sum(axis=1)).ravel())))
        self.term_sizes = np.concatenate([s[3] for s in self.sets] + [np.zeros(1, np.int64)])
        self.sf = SfTable(N, self.term_sizes, cfg.top_n)
        self.db_names = [s[0] for s in self.sets] + [n[0] for n in self.nets]
        self.tests_per_list = sum(len(s[2]) for s in self.sets) + len(self.nets)

    def fit(self, F: sp.csr_matrix) -> None:
        """Grow the p-value table when a list is longer than top_n (a table with tied ranks)."""
        n_max = int(np.diff(F.indptr).max(initial=0))
        if n_max > self.sf.n_max:
            self.sf = SfTable(self.N, self.term_sizes, n_max)


class _Tester:
    """Databases, networks and settings, with each universe prepared once for all layers and baselines."""

    def __init__(self, databases, networks, universe, cfg: AnnotateConfig):
        self.databases, self.networks, self.universe, self.cfg = list(databases), list(networks), universe, cfg
        self._cache: dict[tuple, _Universe] = {}

    def at(self, layer: int) -> _Universe:
        raw = self.universe.get(layer) if isinstance(self.universe, dict) else self.universe
        if raw is None:
            raise AtlasError(f"universe: no genes given for layer {layer}")
        key = tuple(raw)
        if key not in self._cache:
            names = sorted({g for g in _normalise(pd.Series(list(raw), dtype=object).astype(str)) if g})
            self._cache[key] = _Universe(names, self.databases, self.networks, self.cfg)
        return self._cache[key]


@dataclass
class _Family:
    """The significant tests of one layer's pooled BH family (db indexes sets first, then networks)."""

    db: np.ndarray
    row: np.ndarray
    col: np.ndarray   # term index; -1 for a network test
    k: np.ndarray     # overlap, or edges among the list's genes
    p: np.ndarray
    q: np.ndarray
    m: int            # tests in the family: lists x (terms of every set database + one per network)


def _family(F: sp.csr_matrix, U: _Universe, cfg: AnnotateConfig) -> _Family:
    U.fit(F)
    parts = []
    for d, (_, T, _, _) in enumerate(U.sets):
        r, c, k, p = set_tests(F, T, U.sf, keep=cfg.alpha, block=cfg.block)
        parts.append((np.full(r.size, d), r, c, k, p))
    for j, (_, A, x) in enumerate(U.nets):
        e, _, p = network_tests(F, A, x, cfg.block)
        r = np.flatnonzero(p <= cfg.alpha)  # q >= p, so no test with p > alpha can pass
        parts.append((np.full(r.size, len(U.sets) + j), r, np.full(r.size, -1), e[r], p[r]))
    m = F.shape[0] * U.tests_per_list
    cols = [np.concatenate([x[i] for x in parts]) if parts else np.zeros(0) for i in range(5)]
    db, row, col, k = (c.astype(np.int64) for c in cols[:4])
    p = cols[4].astype(np.float64)
    q = bh(p, m) if p.size else p  # the tests left out all have p > alpha >= every p given
    keep = q <= cfg.alpha
    return _Family(db[keep], row[keep], col[keep], k[keep], p[keep], q[keep], m)


def _counts(fam: _Family, U: _Universe) -> dict[str, int]:
    """Lists with at least one pooled-significant test, per database and in any database."""
    out = {name: int(np.unique(fam.row[fam.db == d]).size) for d, name in enumerate(U.db_names)}
    out[ANY] = int(np.unique(fam.row).size)
    return out


def annotate(genes: pd.DataFrame, databases: list[GeneSets], networks: list[Network] = (), *,
             universe: dict[int, list[str]] | list[str], cfg: AnnotateConfig = AnnotateConfig(),
             baselines: list[Baseline] = ()) -> Annotation:
    """Annotate every (layer, feature) of `genes` (columns layer, feature, gene, rank; rank 1 = first).

    `universe`: the genes that could have entered a top list, one list for all layers or one per layer. For a
    build these are the genes with at least `min_support` tokens in the data. `baselines`: more gene lists
    (coexpression, pca, random_init_model, ...) tested the same way; `random_genes` is made here unless
    `cfg.random_genes` is off.
    """
    tester = _Tester(databases, networks, universe, cfg)
    table = _prepare(genes, "feature", cfg, "gene table")
    meta = {"config": asdict(cfg), "databases": _db_meta(databases, networks), "layers": {},
            "family": "pooled: every set-database and network test of a layer in one Benjamini-Hochberg family"}
    enrich, labels, rates, shuffled = [], [], [], []
    for layer, part in table.groupby("layer", sort=True):
        layer = int(layer)
        U = tester.at(layer)
        feats, F, outside = _matrix(part, "feature", U)
        fam = _family(F, U, cfg)
        enrich.append(_enrichments(layer, feats, F, fam, U))
        labels.append(_labels(layer, feats, enrich[-1], [s[0] for s in U.sets]))
        rates += [{"layer": layer, "database": name, "n_features": int(feats.size), "annotated": n}
                  for name, n in _counts(fam, U).items()]
        meta["layers"][str(layer)] = {
            "universe": U.N, "features": int(feats.size), "genes_outside_universe": outside, "family_tests": fam.m,
            "databases": {s[0]: {"terms_tested": len(s[2]), "tests": int(feats.size * len(s[2]))} for s in U.sets}
            | {n[0]: {"edges_in_universe": int(n[1].nnz // 2), "tests": int(feats.size)} for n in U.nets}}
        if cfg.random_genes:
            shuffled.append(matrix_lists(curveball(F, seed=(cfg.seed, layer)), U.names, layer, feats))
    rates = pd.DataFrame(rates, columns=["layer", "database", "n_features", "annotated"])
    every = list(baselines)
    if cfg.random_genes and shuffled:
        every.insert(0, Baseline("random_genes", pd.concat(shuffled, ignore_index=True), RANDOM_GENES_NOTE))
    rows = [r for b in every for r in _baseline_rows(tester, b, rates)]
    meta["baselines"] = {b.name: b.note for b in every}
    rates["null_annotated"] = _random_counts(rates, rows)
    enrich = [e for e in enrich if len(e)]
    lab = pd.concat(labels, ignore_index=True) if labels else LABELS.empty_table().to_pandas()
    return Annotation(pa.Table.from_pandas(pd.concat(enrich, ignore_index=True), schema=ENRICHMENTS,
                                           preserve_index=False) if enrich else ENRICHMENTS.empty_table(),
                      pa.Table.from_pandas(lab, schema=LABELS, preserve_index=False),
                      pa.Table.from_pandas(rates, schema=RATES, preserve_index=False),
                      pa.Table.from_pylist(rows, schema=BASELINE_ROWS), meta)


def annotate_baseline(baseline: Baseline, observed_rates: pa.Table | pd.DataFrame, databases, networks=(), *,
                      universe, cfg: AnnotateConfig = AnnotateConfig(), features: pd.DataFrame | None = None) -> pa.Table:
    """Rows of `null_baseline` for one baseline, beside the features' rates of an earlier `annotate` call.

    Use the same databases, networks, universe and config as that call, or the rates are not comparable.
    """
    return annotate_baselines([baseline], observed_rates, databases, networks, universe=universe, cfg=cfg,
                              features=features)


def annotate_baselines(baselines: list[Baseline], observed_rates: pa.Table | pd.DataFrame, databases, networks=(), *,
                       universe, cfg: AnnotateConfig = AnnotateConfig(),
                       features: pd.DataFrame | None = None) -> pa.Table:
    """`annotate_baseline` for several baselines, preparing each universe once for all of them.

    `features` (the features' own lists: layer, feature, gene, rank, lead = 0 for the most frequent feature) makes
    the comparison like for like: a baseline with fewer lists than the features is set beside the same number of
    the layer's most frequent features, tested as a family of that size (a smaller BH family passes more)."""
    rates = observed_rates.to_pandas() if isinstance(observed_rates, pa.Table) else observed_rates
    tester = _Tester(databases, networks, universe, cfg)
    rows = [r for b in baselines for r in _baseline_rows(tester, b, rates, features)]
    return pa.Table.from_pylist(rows, schema=BASELINE_ROWS)


def _baseline_rows(tester: _Tester, b: Baseline, rates: pd.DataFrame, features: pd.DataFrame | None = None) -> list[dict]:
    cfg = tester.cfg
    table = _prepare(b.lists, "list", cfg, f"baseline {b.name!r}")
    observed = {(int(r.layer), r.database): (int(r.annotated), int(r.n_features)) for r in rates.itertuples()}
    out = []
    for layer, part in table.groupby("layer", sort=True):
        layer = int(layer)
        U = tester.at(layer)
        ids, F, _ = _matrix(part, "list", U)
        counts = _counts(_family(F, U, cfg), U)
        matched = None
        if features is not None:
            mine = features[features["layer"] == layer]
            order = mine.drop_duplicates("feature").sort_values(["lead", "feature"])["feature"]
            if 0 < ids.size < len(order):  # the same number of the most frequent features, in a family of that size
                top = _prepare(mine[mine["feature"].isin(order.iloc[:ids.size])], "feature", cfg, "feature lists")
                fids, FF, _ = _matrix(top, "feature", U)
                matched = (_counts(_family(FF, U, cfg), U), fids.size)
        note = (f"{b.note}; {ids.size} lists of at most {cfg.top_n} genes; share with a test at pooled "
                f"BH q <= {cfg.alpha}" + (f"; observed: the layer's {matched[1]} most frequent features tested as "
                                          f"{matched[1]} lists, the same family size" if matched else ""))
        for name, n in counts.items():
            k_obs, n_obs = (matched[0][name], matched[1]) if matched else observed.get((layer, name), (None, None))
            out.append(rate_row(layer, "annotation", name, b.name, k_obs, n_obs, n, ids.size, note))
    return out


def rate_row(layer: int, analysis: str, measure: str, baseline: str, k_obs, n_obs, k_exp, n_exp, note: str) -> dict:
    """A null_baseline row of two proportions, each with its count of lists and its Clopper-Pearson interval."""
    obs_lo, obs_hi = clopper_pearson(k_obs, n_obs) if n_obs else (None, None)
    exp_lo, exp_hi = clopper_pearson(k_exp, n_exp) if n_exp else (None, None)
    return {"layer": layer, "analysis": analysis, "measure": measure, "baseline": baseline,
            "observed": k_obs / n_obs if n_obs else None, "expected": k_exp / n_exp if n_exp else None, "note": note,
            "observed_n": n_obs, "expected_n": n_exp, "observed_lo": obs_lo, "observed_hi": obs_hi,
            "expected_lo": exp_lo, "expected_hi": exp_hi}


def _random_counts(rates: pd.DataFrame, rows: list[dict]) -> pd.array:
    """Lists of the random_genes baseline annotated, per rates row (it has as many lists as features)."""
    share = {(r["layer"], r["measure"]): r["expected"] for r in rows if r["baseline"] == "random_genes"}
    vals = [share.get((int(L), d)) for L, d in zip(rates["layer"], rates["database"])]
    return pd.array([None if s is None else round(s * n) for s, n in zip(vals, rates["n_features"])],
                    dtype="Int32")


def _normalise(genes: pd.Series) -> np.ndarray:
    codes, uniq = pd.factorize(genes)
    return np.asarray([normalise_gene(g) for g in uniq] + [None], dtype=object)[codes]


def _prepare(df: pd.DataFrame, id_col: str, cfg: AnnotateConfig, what: str) -> pd.DataFrame:
    """Checked, normalised rows with rank <= top_n."""
    need = ["layer", id_col, "gene", "rank"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise AtlasError(f"{what}: missing column(s) {', '.join(missing)} (needs {', '.join(need)})")
    for col in ("layer", id_col):
        if len(df) and not pd.api.types.is_integer_dtype(df[col]):
            raise AtlasError(f"{what}: column {col!r} must hold whole numbers (got {df[col].dtype})")
    ranks = pd.to_numeric(df["rank"], errors="coerce")
    if len(df) and (ranks.isna().any() or ranks.min() < 1):
        i = int(np.flatnonzero(ranks.isna().to_numpy() | (ranks < 1).to_numpy())[0])
        raise AtlasError(f"{what}: rank {df['rank'].iloc[i]} in row {i + 1}; ranks start at 1")
    g = df.loc[ranks <= cfg.top_n, need].copy()
    uniq = pd.unique(g["gene"].astype(str))
    entrez = [x for x in uniq if x.isdigit()]
    if entrez:
        raise AtlasError(f"{what}: gene {entrez[0]!r} looks like an Entrez id (a number); gene symbols or "
                         "Ensembl ids were expected")
    g["gene"] = _normalise(g["gene"].astype(str))
    return g.dropna(subset=["gene"]).sort_values(["layer", id_col, "rank"], kind="stable")


def _matrix(part: pd.DataFrame, id_col: str, U: _Universe):
    """(list ids, lists x universe indicator, genes dropped as outside the universe)."""
    ids, rows = np.unique(part[id_col].to_numpy(dtype=np.int64), return_inverse=True)
    cols = U.index.get_indexer(part["gene"].to_numpy())
    inside = cols >= 0
    F = sp.csr_matrix((np.ones(int(inside.sum()), np.float32), (rows.ravel()[inside], cols[inside])),
                      shape=(ids.size, U.N))
    F.sum_duplicates()
    F.data[:] = 1.0
    return ids, F, int((~inside).sum())


def _enrichments(layer: int, feats: np.ndarray, F: sp.csr_matrix, fam: _Family, U: _Universe) -> pd.DataFrame:
    frames = []
    n = np.diff(F.indptr)
    for d, (name, T, terms, sizes) in enumerate(U.sets):
        sel = fam.db == d
        r, c, k = fam.row[sel], fam.col[sel], fam.k[sel]
        shared = overlap_members(F, T, r, c)
        frames.append(pd.DataFrame({
            "feature": feats[r], "database": name, "term": np.asarray(terms, dtype=object)[c], "p": fam.p[sel],
            "q": fam.q[sel], "odds_ratio": haldane_odds(k, n[r], sizes[c], U.N), "overlap": k,
            "overlap_genes": _split(shared, U.names), "set_size": sizes[c], "edge_density": np.nan}))
    for j, (name, A, _) in enumerate(U.nets):
        sel = fam.db == len(U.sets) + j
        r, e = fam.row[sel], fam.k[sel]
        linked = F[r].multiply(F[r] @ A).tocsr()
        linked.sort_indices()
        frames.append(pd.DataFrame({
            "feature": feats[r], "database": name, "term": "edges among top genes", "p": fam.p[sel],
            "q": fam.q[sel], "odds_ratio": np.nan, "overlap": e, "overlap_genes": _split(linked, U.names),
            "set_size": n[r], "edge_density": e / np.maximum(n[r] * (n[r] - 1) / 2, 1)}))
    if not frames:
        return ENRICHMENTS.empty_table().to_pandas()
    enr = pd.concat(frames, ignore_index=True)
    enr.insert(0, "layer", layer)
    enr = enr.astype({"layer": "int16", "feature": "int32", "overlap": "int32", "set_size": "int32"})
    return enr.sort_values(["layer", "feature", "database", "term"], kind="stable", ignore_index=True)


def _split(M: sp.csr_matrix, names: np.ndarray) -> list[list[str]]:
    """Each row's genes by name (sorted: the universe is sorted and the indices are)."""
    flat = names[M.indices]
    return [flat[a:b].tolist() for a, b in zip(M.indptr[:-1], M.indptr[1:])]


def _labels(layer: int, feats: np.ndarray, enr: pd.DataFrame, set_dbs: list[str]) -> pd.DataFrame:
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


def _term_matrix(db: GeneSets, index: pd.Index, N: int, cfg: AnnotateConfig):
    """Genes x terms membership, terms restricted to the universe and kept if min_size <= size <= max_size."""
    lens = np.fromiter((len(g) for g in db.genes), np.int64, len(db.genes))
    flat = index.get_indexer(np.fromiter((g for gs in db.genes for g in gs), object, int(lens.sum())))
    term = np.repeat(np.arange(len(db.genes)), lens)
    inside = flat >= 0
    M = sp.csr_matrix((np.ones(int(inside.sum()), np.float32), (term[inside], flat[inside])),
                      shape=(len(db.genes), N))
    M.sum_duplicates()
    M.data[:] = 1.0
    size = np.diff(M.indptr)
    keep = np.flatnonzero((size >= cfg.min_size) & (size <= cfg.max_size))
    T = M[keep].T.tocsc()
    return T, [db.terms[i] for i in keep], size[keep].astype(np.int64)


def _adjacency(net: Network, index: pd.Index, N: int) -> sp.csr_matrix:
    pairs = np.asarray(net.edges, dtype=object).reshape(-1, 2)
    a, b = index.get_indexer(pairs[:, 0]), index.get_indexer(pairs[:, 1])
    ok = (a >= 0) & (b >= 0)
    rows, cols = np.concatenate([a[ok], b[ok]]), np.concatenate([b[ok], a[ok]])
    A = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(N, N))
    A.sum_duplicates()
    A.data[:] = 1.0
    return A


def _db_meta(databases, networks) -> dict:
    out = {}
    for db in list(databases) + list(networks):
        sets = isinstance(db, GeneSets)
        out[db.name] = dict(db.meta) | {"kind": "gene sets" if sets else "network",
                                        "terms" if sets else "edges": len(db.terms) if sets else len(db.edges)}
    return out


def read_gene_table(path, layer: int | None = None, id_column: str = "feature") -> pd.DataFrame:
    """A (layer, feature, gene, rank) table from Parquet, CSV or TSV; `layer` fills a missing layer column.

    `id_column`: "feature" for top genes, "list" for a baseline's gene lists.
    """
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
    need = ("layer", id_column, "gene", "rank")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise AtlasError(f"{path}: missing column(s) {', '.join(missing)} (needs {', '.join(need)}"
                         + ("; --layer fills layer" if missing == ["layer"] else "") + ")")
    # The atlas stores layer as int16 and feature as int32; rows are counted as in the file (header = row 1).
    for col, hi in (("layer", 2**15 - 1), (id_column, 2**31 - 1), ("rank", 2**15 - 1)):
        num = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero((num.isna() | (num % 1 != 0) | (num < 0) | (num > hi)).to_numpy())
        if bad.size:
            value = df[col].iloc[bad[0]]
            raise AtlasError(f"{path}: column {col!r} must hold whole numbers from 0 to {hi} "
                             f"(row {int(bad[0]) + 2}: {getattr(value, 'item', lambda: value)()!r})")
        df[col] = num.astype(np.int64)
    if len(df) and df["rank"].min() < 1:
        i = int(np.flatnonzero(df["rank"].to_numpy() < 1)[0])
        raise AtlasError(f"{path}: row {i + 2}: rank {df['rank'].iloc[i]} (ranks start at 1, the strongest gene)")
    df["gene"] = df["gene"].astype(str)
    digits = df["gene"].str.fullmatch(r"\d+")
    if digits.any():
        i = int(np.flatnonzero(digits.to_numpy())[0])
        raise AtlasError(f"{path}: row {i + 2}: gene {df['gene'].iloc[i]!r} looks like an Entrez id (a number); "
                         "gene symbols or Ensembl ids were expected")
    return df


def write_annotation(out, ann: Annotation) -> None:
    """OUT/: enrichments, labels, rates and baselines as Parquet; annotate.json with parameters and sources."""
    import pyarrow.parquet as pq

    from ...fsutil import atomic_dir
    from ...jsonio import dumps_json

    with atomic_dir(out) as tmp:
        for name in ("enrichments", "labels", "rates", "baselines"):
            pq.write_table(getattr(ann, name), tmp / f"{name}.parquet", compression="zstd")
        (tmp / "annotate.json").write_bytes(dumps_json(ann.meta, indent=True))


def read_annotation(folder) -> Annotation:
    """What write_annotation wrote."""
    import json

    import pyarrow.parquet as pq

    folder = Path(folder)
    tables = {name: pq.read_table(folder / f"{name}.parquet") for name in ("enrichments", "labels", "rates", "baselines")}
    return Annotation(**tables, meta=json.loads((folder / "annotate.json").read_text()), folder=folder)
