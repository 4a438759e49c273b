#!/usr/bin/env bash
# Measure our site with ../shared/tools/sitebench.py: gzip on, Fast 3G, the predecessor's scenarios plus ours.
#   bash bench/run_sitebench.sh            # imported scGPT atlas + synthetic Geneformer-scale atlas + demo
# Runs against this checkout (PYTHONPATH), installs nothing. Writes bench/out/*.md and *.json; the tables are
# copied into bench/README.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
SHARED=${SHARED:-../shared}
RUNS=${RUNS:-3}
OUT=bench/out
mkdir -p "$OUT"
python3 -m builder.cli import biodyn "$SHARED/reference/scgpt-atlas" --atlas scgpt --title "scGPT whole-human feature atlas" --model scgpt --data-dir "$OUT/atlas_data" >/dev/null
[ -d "$OUT/atlas_data/geneformer-scale" ] || /usr/bin/time -v python3 bench/make_synthetic_atlas.py --layers 18 --features 4608 --out "$OUT/atlas_data/geneformer-scale" 2> "$OUT/synth.time"
# the interventions views at screen scale (no published atlas with perturbation data is in ../shared)
[ -d "$OUT/atlas_data/tf-scale" ] || python3 bench/make_synthetic_atlas.py --layers 12 --features 2048 --interventions 2000 --out "$OUT/atlas_data/tf-scale"
cp -r atlas_data/demo "$OUT/atlas_data/" 2>/dev/null || true
for a in scgpt geneformer-scale tf-scale demo; do
  /usr/bin/time -v python3 -m builder.cli render --atlas "$a" --data-dir "$OUT/atlas_data" --site "$OUT/site" 2> "$OUT/render-$a.time" | tee "$OUT/render-$a.txt"
  grep -E "Maximum resident|Elapsed" "$OUT/render-$a.time" | tee -a "$OUT/render-$a.txt"
done
python3 "$SHARED/tools/sitebench.py" serve "$OUT/site" --port 8770 --gzip --cache-control max-age=600 >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER' EXIT
sleep 1
for a in scgpt geneformer-scale; do  # the demo's 4 layers lack the scenarios' layer 7
  scenarios=bench/scenarios/our_atlas_synthetic.json
  [ "$a" = scgpt ] && scenarios=bench/scenarios/our_atlas.json
  python3 "$SHARED/tools/sitebench.py" run "$scenarios" --base-url "http://127.0.0.1:8770/$a/" \
    --runs "$RUNS" --network fast3g --interleave --label "ours: $a, gzip, Fast 3G" --out "$OUT/$a-fast3g.json" --md "$OUT/$a-fast3g.md"
done
python3 "$SHARED/tools/sitebench.py" run bench/scenarios/interventions.json --base-url "http://127.0.0.1:8770/tf-scale/" \
  -s n_home_interventions_cold -s o_tf_index_cold -s p_tf_page_cold -s q_feature_perturbation_cold --runs "$RUNS" --network fast3g --interleave --label "ours: tf-scale, gzip, Fast 3G" --out "$OUT/tf-scale-fast3g.json" \
  --md "$OUT/tf-scale-fast3g.md"
