"""`atlas build`: every stage from checkpoint + .h5ad to atlas data and site, each cached by a hash of its inputs.

Stages and their cache folders (CACHE/<stage>-<key>/, each written atomically, so a killed build resumes at
the first stage without a folder, and a changed parameter recomputes only the stages whose key it enters):

  extract            model forward over the dataset: activations per layer, tokens      (extract.py)
  sae-LL             the SAE of layer LL: trained (--train-sae) or loaded (--sae)      (sae.py)
  codes-LL           sparse codes of layer LL                                            (encode.py)
  stats-LL           feature statistics, top genes and cells, cell-type tests           (stats.py)
  annotate           enrichments, labels, null baseline for all layers                   (annotate.py)
  graph-LL           modules with their null, the map, the SVD comparison               (graphs.py)
  cross-LL-MM        cross-layer edges of an adjacent pair, decoder-cosine matches     (graphs.py)

Then export writes atlas_data/NAME/ and render writes site/NAME/, both atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

from .. import __version__
from .annotate import AnnotateConfig
from ..errors import AtlasError
from ..fsutil import atomic_dir, sha256_file
from .graphs import GraphConfig
from ..parse import atlas_name, layer_list
from .sae import TrainConfig
from .stats import StatsConfig

DEFAULT_DATA = Path("atlas_data/inputs/immune_sample.h5ad")


@dataclass(frozen=True)
class BuildConfig:
    model: str = ""
    checkpoint: str = ""
    data: str = str(DEFAULT_DATA)
    sae: str = ""                 # folder with layer_LL/ SAEs (SAELens) or layer_LL.pt (published format)
    train_sae: bool = False
    genesets: tuple[str, ...] = ()  # empty: the bundled defaults
    trrust: str = ""
    string: str = ""
    string_info: str = ""
    string_min_score: int = 700
    string_channels: str = "experimental,database"  # or "combined" (see genesets.read_string)
    layers: str = ""              # e.g. 0,3,5-7; empty: every layer
    atlas: str = ""               # default: the model family
    title: str = ""
    max_cells: int = 0            # 0: every cell
    batch_size: int = 0           # 0: 1 on the CPU, 16 on a GPU
    device: str = "cpu"
    gene_column: str = ""
    cell_type_column: str = ""
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)  # its seed is replaced by `seed`
    stats: StatsConfig = field(default_factory=StatsConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    graphs: GraphConfig = field(default_factory=GraphConfig)


SECTIONS = {"train": TrainConfig, "stats": StatsConfig, "annotate": AnnotateConfig, "graphs": GraphConfig}


def _check_type(where: str, name: str, value, default):
    expected = int if default is None else type(default)  # None defaults (aux_k) take a number
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise AtlasError(f"{where}: {name} must be a list of strings, got {value!r}")
        return tuple(value)
    if type(value) is not expected:
        kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[expected]
        raise AtlasError(f"{where}: {name} must be {kind}, got {value!r}")
    return value


def read_config(path: Path | None, overrides: dict) -> BuildConfig:
    """Defaults, then the TOML file, then command-line options. Unknown keys and wrong types are refused."""
    cfg = BuildConfig()
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise AtlasError(f"{path}: no such config file")
        try:
            raw = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise AtlasError(f"{path}: not valid TOML ({e})") from None
        top = {f.name: f for f in fields(BuildConfig) if f.name not in SECTIONS}
        for key, value in raw.items():
            if key in SECTIONS:
                if not isinstance(value, dict):
                    raise AtlasError(f"{path}: [{key}] must be a table")
                defaults = SECTIONS[key]()
                known = {f.name for f in fields(defaults)}
                for k, v in value.items():
                    if k not in known:
                        raise AtlasError(f"{path}: unknown key {k!r} in [{key}] (known: {', '.join(sorted(known))})")
                    value[k] = _check_type(f"{path}: [{key}]", k, v, getattr(defaults, k))
                values[key] = replace(defaults, **value)
            elif key in top:
                values[key] = _check_type(str(path), key, value, getattr(cfg, key))
            else:
                raise AtlasError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(list(top) + list(SECTIONS)))})")
    values.update({k: v for k, v in overrides.items() if v not in (None, (), False)})
    cfg = replace(cfg, **values)
    if cfg.model not in ("scgpt", "geneformer"):
        raise AtlasError(f"model {cfg.model or '(none)'!r}: expected scgpt or geneformer (--model or `model` in the config)")
    if not cfg.checkpoint:
        raise AtlasError("no checkpoint: give --checkpoint DIR (or `checkpoint` in the config)")
    if bool(cfg.sae) == cfg.train_sae:
        raise AtlasError("give exactly one of --sae DIR and --train-sae")
    return cfg


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode() + b"\0")
    return h.hexdigest()[:16]


def _tree_hash(path: Path) -> str:
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise AtlasError(f"{path}: no such file or folder")
    return _hash(sorted((p.relative_to(path).as_posix(), sha256_file(p)) for p in path.rglob("*") if p.is_file()))


@dataclass
class Stage:
    """Timing, cache hits and the process's peak RSS (high-water mark, MB) after each stage, for the summary."""

    seconds: Counter = field(default_factory=Counter)
    cached: Counter = field(default_factory=Counter)
    computed: Counter = field(default_factory=Counter)
    peak_mb: dict = field(default_factory=dict)

    def done(self, kind: str, seconds: float) -> None:
        import resource

        self.seconds[kind] += seconds
        self.peak_mb[kind] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Builder:
    def __init__(self, cfg: BuildConfig, cache: Path, data_dir: Path, site_dir: Path,
                 log: Callable[[str], None] = lambda s: None):
        self.cfg, self.cache, self.data_dir, self.site_dir, self.log = cfg, Path(cache), Path(data_dir), Path(site_dir), log
        self.stage = Stage()
        self.name = cfg.atlas or cfg.model

    def cached(self, stage: str, key: str, make: Callable[[Path], None]) -> Path:
        """CACHE/stage-key/, made by make(tmp) into a temporary folder unless it is already there."""
        out = self.cache / f"{stage}-{key}"
        kind = stage.split("-")[0]
        if (out / ".done").is_file():
            self.stage.cached[kind] += 1
            return out
        t0 = time.perf_counter()
        self.log(f"{stage}: computing")
        with atomic_dir(out) as tmp:
            make(tmp)
            (tmp / ".done").write_text(key + "\n")
        self.stage.done(kind, time.perf_counter() - t0)
        self.stage.computed[kind] += 1
        return out

    def run(self) -> dict:
        from .extract import extract
        from ..models import check_layers, load
        from ..site.render import render

        cfg = self.cfg
        t_all = time.perf_counter()
        atlas_name(self.name)
        data = Path(cfg.data)
        if not data.is_file():
            raise AtlasError(f"{data}: no such dataset file")
        adapter = load(cfg.model, Path(cfg.checkpoint), seed=cfg.seed)  # checks the checkpoint before any work
        layers = check_layers(adapter, layer_list(cfg.layers) if cfg.layers else None)
        del adapter
        ckpt_hash = _tree_hash(Path(cfg.checkpoint))
        data_hash = sha256_file(data)
        inputs = {"checkpoint": ckpt_hash, "data": data_hash}
        ekey = _hash("extract", __version__, cfg.model, ckpt_hash, data_hash, layers, cfg.max_cells, cfg.gene_column,
                     cfg.seed)
        edir = self.cached("extract", ekey, lambda tmp: extract(
            cfg.model, Path(cfg.checkpoint), data, tmp / "x", layers, cfg.max_cells or None, cfg.batch_size or None,
            cfg.device, cfg.gene_column or None, cfg.seed)) / "x"
        record = json.loads((edir / "extract.json").read_text())
        tokens = pq.read_table(edir / "tokens.parquet").to_pandas()
        names = dict(zip(tokens["token_id"].tolist(), tokens["gene"].tolist()))
        cell_types = self.cell_types = self._cell_types(data, record)

        sae_keys, stats_dirs, codes_dirs, sae_dirs = {}, {}, {}, {}
        for L in layers:
            sae_dirs[L], sae_keys[L] = self._sae(L, edir, ekey, record)
            ckey = _hash("codes", sae_keys[L], ekey)
            codes_dirs[L] = self.cached(f"codes-{L:02d}", ckey, lambda tmp, L=L: self._encode(L, edir, sae_dirs[L], tmp))
            skey = _hash("stats", ckey, asdict(cfg.stats), cfg.cell_type_column)
            stats_dirs[L] = self.cached(f"stats-{L:02d}", skey, lambda tmp, L=L: self._stats(
                codes_dirs[L], tmp, names, tokens, cell_types, record))

        from ..parse import string_channels
        from .genesets import load_genesets, read_string, read_trrust
        dbs, nets = load_genesets(cfg.genesets), []
        if cfg.trrust:
            s, e = read_trrust(Path(cfg.trrust))
            dbs.append(s)
            nets.append(e)
        if cfg.string:
            nets.append(read_string(Path(cfg.string), Path(cfg.string_info) if cfg.string_info else None,
                                    cfg.string_min_score, string_channels(cfg.string_channels)))
        akey = _hash("annotate", [stats_dirs[L].name for L in layers], [d.meta.get("sha256") for d in dbs + nets],
                     [d.name for d in dbs + nets], asdict(cfg.annotate))
        adir = self.cached("annotate", akey, lambda tmp: self._annotate(layers, stats_dirs, tokens, dbs, nets, tmp))

        gdirs = {}
        for L in layers:
            gkey = _hash("graph", codes_dirs[L].name, stats_dirs[L].name, sae_keys[L], asdict(cfg.graphs))
            gdirs[L] = self.cached(f"graph-{L:02d}", gkey, lambda tmp, L=L: self._graph(
                L, codes_dirs[L], stats_dirs[L], sae_dirs[L], edir, tmp))
        cdirs = {}
        for a, b in zip(layers, layers[1:]):
            xkey = _hash("cross", codes_dirs[a].name, codes_dirs[b].name, sae_keys[a], sae_keys[b], asdict(cfg.graphs))
            cdirs[a, b] = self.cached(f"cross-{a:02d}-{b:02d}", xkey, lambda tmp, a=a, b=b: self._cross(
                codes_dirs[a], codes_dirs[b], sae_dirs[a], sae_dirs[b], tokens["token_id"].to_numpy(), tmp))

        t0 = time.perf_counter()
        from ..atlas.export import export
        out = export(self, layers, record, inputs, edir, sae_dirs, stats_dirs, adir, gdirs, cdirs, dbs, nets)
        self.stage.done("export", time.perf_counter() - t0)
        t0 = time.perf_counter()
        site = render(out, self.site_dir)
        self.stage.done("render", time.perf_counter() - t0)
        return {"atlas": out, "site": site, "seconds": time.perf_counter() - t_all, "stages": self.stage}

    # Stages

    def _cell_types(self, data: Path, record: dict):
        col = self.cfg.cell_type_column
        if not col:
            return None
        import anndata

        obs = anndata.read_h5ad(data, backed="r").obs.iloc[: record["dataset"]["cells"]]
        if col not in obs.columns:
            raise AtlasError(f"{data}: obs has no column {col!r} (has: {', '.join(map(str, obs.columns)) or 'none'})")
        return obs[col].astype(str).to_numpy()

    def _sae(self, L: int, edir: Path, ekey: str, record: dict):
        from .extract import read_activations
        from .sae import load_sae, train

        cfg = self.cfg
        if cfg.sae:
            root = Path(cfg.sae)
            for cand in (root / f"layer_{L:02d}", root / f"layer_{L}", root / f"layer_{L:02d}.pt", root / f"layer_{L}.pt"):
                if cand.exists():
                    model = load_sae(cand)
                    if model.d_in != record["model"]["width"]:
                        raise AtlasError(f"{cand}: SAE input width {model.d_in} does not fit layer {L} of "
                                         f"{record['model']['name']} (width {record['model']['width']})")
                    return cand, _hash("sae-file", _tree_hash(cand))
            raise AtlasError(f"{root}: no SAE for layer {L} (expected layer_{L:02d}/ or layer_{L:02d}.pt)")
        tc = replace(cfg.train, seed=cfg.seed)
        key = _hash("sae-train", ekey, L, asdict(tc))

        def make(tmp):
            import torch

            acts, _ = read_activations(edir, L)
            cells = pq.read_table(edir / "tokens.parquet", columns=["cell"])["cell"].to_numpy()
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # multi-threaded reductions vary run to run; the cache must not
            try:
                model, metrics = train(acts, cells, tc, where=f"layer {L}")
            finally:
                torch.set_num_threads(threads)
            model.save(tmp / "sae", {"layer": L, "model_name": record["model"]["name"], "training": metrics})

        return self.cached(f"sae-{L:02d}", key, make) / "sae", key

    def _encode(self, L, edir, sae_path, tmp):
        from .encode import encode_activations
        from .sae import load_sae

        encode_activations(load_sae(sae_path), edir, L, tmp / "codes", {"layer": L, "activations": "extract"})

    def _stats(self, codes_dir, tmp, names, tokens, cell_types, record):
        from .encode import read_codes
        from .stats import feature_stats, write_stats

        folder = codes_dir / "codes"
        rec, _ = read_codes(folder)
        n_cells = record["dataset"]["cells"]
        cell_ids = tokens.drop_duplicates("cell").set_index("cell")["cell_id"].reindex(range(n_cells)).fillna("").to_numpy()
        result = feature_stats(lambda: read_codes(folder)[1], rec["n_features"], n_cells, max(names) + 1,
                               self.cfg.stats, cell_types)
        write_stats(tmp / "stats", result, names, cell_ids, {"layer": rec["layer"], "config": asdict(self.cfg.stats)})

    def _annotate(self, layers, stats_dirs, tokens, dbs, nets, tmp):
        from .annotate import annotate, write_annotation

        parts = []
        for L in layers:
            g = pq.read_table(stats_dirs[L] / "stats" / "feature_genes.parquet", columns=["feature", "gene", "rank"])
            parts.append(g.to_pandas().assign(layer=L))
        table = pd.concat(parts, ignore_index=True)
        universe = sorted(set(tokens["gene"]))  # the genes the model saw in this dataset
        write_annotation(tmp / "annotation", annotate(table, dbs, nets, universe=universe, cfg=self.cfg.annotate))

    def _graph(self, L, codes_dir, stats_dir, sae_path, edir, tmp):
        from .encode import read_codes
        from .extract import read_activations
        from .graphs import feature_map, fired_matrix, modules_with_null, principal_axes, svd_alignment
        from .sae import load_sae

        g = self.cfg.graphs
        rec, shards = read_codes(codes_dir / "codes")
        X = fired_matrix(shards, rec["n_features"])
        real, null = modules_with_null(X, g)
        genes = pq.read_table(stats_dir / "stats" / "feature_genes.parquet").to_pandas()
        n_tok = int(genes["token_id"].max()) + 1 if len(genes) else 1
        profile = sp.csr_matrix((genes["score"].to_numpy(), (genes["feature"].to_numpy(), genes["token_id"].to_numpy())),
                                shape=(rec["n_features"], n_tok))
        xy = feature_map(profile, g)
        W = load_sae(sae_path).W_dec.detach().numpy()
        acts, _ = read_activations(edir, L)
        aligned, expected = svd_alignment(W, principal_axes(acts, g.svd_axes), g.svd_threshold, g.seed)
        np.savez(tmp / "graph.npz", membership=real["membership"], xy=xy, aligned=aligned)
        summary = {k: v for k, v in real.items() if k != "membership"}
        summary_null = {k: v for k, v in null.items() if k != "membership"}
        (tmp / "graph.json").write_text(json.dumps({"modules": summary, "modules_null": summary_null,
                                                    "svd_expected_share": expected}, sort_keys=True))

    def _cross(self, ca, cb, sa, sb, genes, tmp):
        """`genes`: the token id of every token; codes keep the token order of the extract."""
        from .encode import read_codes
        from .graphs import cross_layer, decoder_matches, fired_matrix
        from .sae import load_sae

        g = self.cfg.graphs
        ra, sha = read_codes(ca / "codes")
        rb, shb = read_codes(cb / "codes")
        res = cross_layer(fired_matrix(sha, ra["n_features"]), fired_matrix(shb, rb["n_features"]), genes, g)
        a, b, cos = decoder_matches(load_sae(sa).W_dec.detach().numpy(), load_sae(sb).W_dec.detach().numpy(), g.cosine)
        np.savez(tmp / "cross.npz", a=res["a"], b=res["b"], count=res["count"], pmi=res["pmi"], p=res["p"],
                 cos_a=a, cos_b=b, cos=cos)
        (tmp / "cross.json").write_text(json.dumps({k: res[k] for k in ("raw_edges", "shuffled_raw_edges", "edges")}
                                                   | {"decoder_matches": int(a.size)}, sort_keys=True))
