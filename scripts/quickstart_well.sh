#!/usr/bin/env bash
# Grids that are not square, from the Well's own layout: a shallow-water set in a walled 32 x 64 basin written by
# our solver as the Well ships its sets (data/{train,valid,test}/*.hdf5), read by the Well reader, mixed with two
# square sets (32 x 32) in a 32 x 64 NESTOR on 2 CPU ranks with ep_size=2, each set in its own units
# (model.normalize: stats); evaluated beside persistence, then a prediction at the data's aspect.
# Defaults fit a 2-core CPU machine in about 6 minutes.
#
#   bash scripts/quickstart_well.sh
#   NORMALIZE=sample STEPS=600 RUN_DIR=runs/quickstart/well_sample bash scripts/quickstart_well.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT_DIR:-runs/quickstart}"
gpus="${GPUS:-2}"
config="${CONFIG:-configs/quickstart_well.yaml}"
run="${RUN_DIR:-$out/well}"
extra=(${EXTRA_ARGS:-})
start=$(date +%s)
say() { printf '\n=== %s (%ds)\n' "$*" "$(( $(date +%s) - start ))"; }

bash scripts/bootstrap.sh >/dev/null
if ! .venv/bin/python -c "import torch; exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    export DS_ACCELERATOR=cpu
fi
ds_config="${DS_CONFIG:-ds_configs/cpu_fp32.json}"
nestor=.venv/bin/nestor-ds

shards="${DATA:-$out/shards_well}"
if [ -z "${DATA:-}" ] && [ ! -f "$shards/.complete" ]; then
    say "generating the Well stand-in (the Well's folder layout) and two square sets with our solvers"
    $nestor data generate --suite well --out "$out/raw_well" --trajectories "${TRAJECTORIES:-20}" --resolution 32
    $nestor data generate --suite small --only swe_pdb,ns2d_fno_1e-3 --out "$out/raw_square" \
        --trajectories "${TRAJECTORIES:-20}" --resolution 32
    say "sharding them (the Well: splits from its folders, conditioning channels input only)"
    $nestor data shard --from-suite "$out/raw_well" --out "$shards" --per-shard 2
    $nestor data shard --from-suite "$out/raw_square" --out "$shards" --per-shard 2
    touch "$shards/.complete"
fi

store="sqlite:///$root/$out/mlflow.db"
say "pre-training a 32 x 64 NESTOR on $gpus ranks (ep_size 2), then evaluation"
.venv/bin/deepspeed --num_gpus "$gpus" --master_port "${MASTER_PORT:-29519}" launch/train.py \
    --ds_config "$ds_config" --config "$config" --set "data.root=$shards" --set "train.output_dir=$run" \
    --set "tracking.uri=$store" --no-resume ${STEPS:+--set train.steps=$STEPS} \
    ${NORMALIZE:+--set model.normalize=$NORMALIZE} "${extra[@]}"

say "prediction on a test trajectory of the Well set, at its 32 x 64 aspect"
.venv/bin/python - "$shards" "$out/well_input.npy" <<'PY'
import sys
from pathlib import Path

import numpy as np

from nestor_ds.data.shards import decode_sample, iter_raw_samples, read_manifest

folder = Path(sys.argv[1]) / "swe_basin_well" / "test"
manifest = read_manifest(folder)
raw = next(iter(iter_raw_samples(str(folder / manifest["shards"][0]["name"]), None)))
np.save(sys.argv[2], decode_sample(raw, manifest["channels"]).data.transpose(1, 2, 0, 3))  # [X, Y, T, C]
PY
$nestor predict --model "$run/checkpoints" --input "$out/well_input.npy" --steps 6 \
    --dataset swe_basin_well --out "$run/predict"

say "done"
cat "$run/eval/eval_table.txt"
printf '\ntotal %ds\n' "$(( $(date +%s) - start ))"
