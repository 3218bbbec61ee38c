#!/usr/bin/env bash
# The 3-D quick path, after scripts/quickstart.sh: a small 3-D compressible-flow set from our solver in
# PDEBench's 3-D layout, sharded; the quick start's 2-D NESTOR fine-tuned into NESTOR-3D on 2 CPU ranks with
# ep_size=2 (train.init_2d_to_3d), the same budget from scratch beside it, both evaluated beside
# persistence, and a report. Defaults fit a 2-core CPU machine in under 10 minutes.
#
#   bash scripts/quickstart.sh && bash scripts/quickstart_3d.sh
#   SCRATCH=0 bash scripts/quickstart_3d.sh          # the fine-tune only
#   STEPS=400 EXTRA_ARGS="--set train.seed=1" bash scripts/quickstart_3d.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT_DIR:-runs/quickstart}"
gpus="${GPUS:-2}"
config="${CONFIG:-configs/quickstart_3d.yaml}"
pretrained="${PRETRAINED:-$out/pretrain/checkpoints}"
extra=(${EXTRA_ARGS:-})
start=$(date +%s)
say() { printf '\n=== %s (%ds)\n' "$*" "$(( $(date +%s) - start ))"; }

if [ ! -f "$pretrained/latest" ]; then
    echo "quickstart_3d: no 2-D pre-training at $pretrained; run scripts/quickstart.sh first (or set PRETRAINED)" >&2
    exit 2
fi
bash scripts/bootstrap.sh >/dev/null
if ! .venv/bin/python -c "import torch; exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    export DS_ACCELERATOR=cpu
fi
ds_config="${DS_CONFIG:-ds_configs/cpu_fp32.json}"

shards="${DATA:-$out/shards3d}"
if [ -z "${DATA:-}" ] && [ ! -f "$shards/.complete" ]; then
    say "generating a 16^3 compressible-flow set with our 3-D solver (PDEBench's 3D_CFD layout)"
    .venv/bin/nestor-ds data generate --suite small3d --out "$out/raw3d" --trajectories "${TRAJECTORIES:-24}" \
        --resolution 16 --frames 12
    say "sharding it into WebDataset tars ([T, X, Y, Z, C] samples)"
    .venv/bin/nestor-ds data shard --from-suite "$out/raw3d" --out "$shards" --per-shard 2
    touch "$shards/.complete"
fi

store="sqlite:///$root/$out/mlflow.db"
common=(--set "data.root=$shards" --set "tracking.uri=$store" --no-resume ${STEPS:+--set train.steps=$STEPS} "${extra[@]}")
launch=(.venv/bin/deepspeed --num_gpus "$gpus" --master_port "${MASTER_PORT:-29518}" launch/train.py
        --ds_config "$ds_config" --config "$config")

say "fine-tuning the 2-D pre-training into NESTOR-3D on $gpus ranks (ep_size 2), then evaluation"
"${launch[@]}" --mode finetune --weights "$pretrained" --set "train.output_dir=$out/finetune3d" "${common[@]}"
runs=(--run "from 2-D=$out/finetune3d")
if [ "${SCRATCH:-1}" = 1 ]; then
    say "the same budget from scratch, then evaluation"
    "${launch[@]}" --set "train.output_dir=$out/scratch3d" --set train.init_from=null --set train.init_2d_to_3d=null \
        --set tracking.run_name=scratch-3d "${common[@]}"
    runs+=(--run "scratch=$out/scratch3d")
fi

say "report"
.venv/bin/nestor-ds report "${runs[@]}" --out "$out/report3d" --log-to-mlflow

say "done"
echo "report: $root/$out/report3d/REPORT.md"
echo
echo "NESTOR-3D from the 2-D pre-training:"
cat "$out/finetune3d/eval/eval_table.txt"
if [ "${SCRATCH:-1}" = 1 ]; then
    echo
    echo "NESTOR-3D from scratch (same steps):"
    cat "$out/scratch3d/eval/eval_table.txt"
fi
printf '\ntotal %ds\n' "$(( $(date +%s) - start ))"
