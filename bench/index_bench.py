"""Gene and term indexes of the site at Geneformer scale: the earlier pyarrow + Python grouping vs DuckDB (used now).

    python bench/index_bench.py bench/out/atlas_data/geneformer-scale [--engine python|duckdb]

Each engine runs in a process of its own (peak RSS is per process); both must give identical shards.
"""

import argparse
import hashlib
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson

from builder.atlas.format import read_atlas
from builder.site.encode import columns, sig, table
from builder.site.indexes import LABEL_CHARS, OWN_SHARD, GeneName, _Labels, gene_keys, gene_shards, term_shards
from builder.site.shards import PLACEHOLDERS


def python_gene_shards(atlas, labels) -> dict:
    """The pyarrow + Python grouping the site used before DuckDB (the baseline)."""
    g = {c: atlas.table("feature_genes").column(c).to_pylist() for c in ("gene", "layer", "feature", "rank", "activation")}
    postings = defaultdict(list)
    for i in range(len(g["gene"])):
        postings[g["gene"][i]].append((g["layer"][i], g["feature"][i], g["rank"][i], sig(g["activation"][i])))
    names, post, own = defaultdict(list), defaultdict(lambda: {"labels": _Labels(), "genes": {}}), defaultdict(int)
    for gene in sorted(postings):
        k1, k2 = gene_keys(gene)
        if len(postings[gene]) > OWN_SHARD:
            own[k2] += 1
            k2 = f"{k2}-{own[k2]}"
            names[k1].append(GeneName(gene, len(postings[gene]), k2))
        else:
            names[k1].append(GeneName(gene, len(postings[gene]), None))
        shard = post[k2]
        lay, f, rank, act = zip(*sorted(postings[gene]))
        shard["genes"][gene] = columns({
            "layer": list(lay), "feature": list(f), "rank": list(rank), "activation": list(act),
            "label": [shard["labels"].id((labels.get(k) or "")[:LABEL_CHARS]) for k in zip(lay, f)]})
    out = {f"genes/n/{k}.json": table(v) for k, v in names.items()}
    out.update({f"genes/p/{k}.json": {"labels": v["labels"].list, "genes": v["genes"]} for k, v in post.items()})
    return out


def run(path: Path, engine: str) -> None:
    atlas = read_atlas(path, check=False)
    t0 = time.perf_counter()
    if engine == "python":
        f = atlas.table("features")
        labels = dict(zip(zip(f.column("layer").to_pylist(), f.column("feature").to_pylist()), f.column("label").to_pylist()))
        shards = python_gene_shards(atlas, labels)
    else:
        shards = gene_shards(atlas)
    t_genes = time.perf_counter() - t0
    shards.update(term_shards(atlas, PLACEHOLDERS))
    t_all = time.perf_counter() - t0
    digest = hashlib.sha256(b"".join(k.encode() + orjson.dumps(shards[k], option=orjson.OPT_SORT_KEYS) for k in sorted(shards))).hexdigest()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{engine}: gene index {t_genes:.1f} s, gene + term indexes {t_all:.1f} s, peak RSS {rss:.0f} MB, "
          f"{len(shards)} shards, sha256 {digest[:16]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("atlas", type=Path)
    ap.add_argument("--engine", choices=["python", "duckdb"])
    a = ap.parse_args()
    if a.engine:
        return run(a.atlas, a.engine)
    for engine in ("python", "duckdb", "python", "duckdb"):  # interleaved, one process each
        subprocess.run([sys.executable, __file__, str(a.atlas), "--engine", engine], check=True)


if __name__ == "__main__":
    main()
