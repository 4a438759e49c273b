"""Write a synthetic atlas (random, seeded, realistic field sizes) in the atlas data format.

    python bench/make_synthetic_atlas.py --layers 18 --features 4608 --out bench/out/atlas_data/geneformer-scale
    python bench/make_synthetic_atlas.py --layers 12 --features 2048 --interventions 2000 --out bench/out/atlas_data/tf-scale
"""

import argparse
import time
from pathlib import Path

from builder.atlas.format import write_atlas
from builder.atlas.synthetic import add_interventions, make_synthetic


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=18)
    ap.add_argument("--features", type=int, default=4608)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hostile", action="store_true", help="plant names that try to run code")
    ap.add_argument("--title")
    ap.add_argument("--interventions", type=int, metavar="N", help="add causal patching (100 features per layer) and "
                    "perturbation response: N perturbations with 60 responses each (a K562 essential screen is ~2,000)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    t0 = time.perf_counter()
    manifest, tables = make_synthetic(a.layers, a.features, a.seed, a.hostile, title=a.title)
    if a.interventions is not None:
        manifest, tables = add_interventions(manifest, tables, a.seed, per_layer=100, n_perturbations=a.interventions,
                                             per_perturbation=60)
    manifest["atlas"]["id"] = a.out.name
    write_atlas(a.out, manifest, tables)
    print(f"wrote {a.out}: {a.layers} layers x {a.features} features in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
