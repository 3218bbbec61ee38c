#!/usr/bin/env bash
# GPU check of the training engine on a lent GPU machine: a bf16 ZeRO-2 pre-training run of the
# published Tiny configuration at resolution 128 (data generated at 64 and resized by the loader).
# Expects wheels for packages the GPU image lacks in .whl/ (deepspeed, pydantic, webdataset, ...).
set -o pipefail
source scripts/gpu_env.sh
steps="${STEPS:-300}"
work=/tmp/nestor-gpu; rm -rf "$work"
sets=ns2d_fno_1e-3,ns2d_fno_1e-4,swe_pdb,dr_pdb
python3 -m nestor_ds data generate --suite small --out "$work/raw" --trajectories 24 --resolution 64 --frames 16 \
    --only "$sets" 2>&1 | grep -v WARN | tail -5
python3 -m nestor_ds data shard --from-suite "$work/raw" --out "$work/shards" --per-shard 2 2>&1 | grep -v WARN
python3 launch/train.py --ds_config ds_configs/zero2_bf16.json --config configs/nestor_tiny.yaml \
    --set parallel.ep_size=1 --set "data.root=$work/shards" \
    --set 'data.datasets=[{name: ns2d_fno_1e-3}, {name: ns2d_fno_1e-4}, {name: swe_pdb}, {name: dr_pdb}]' \
    --set train.steps="$steps" --set train.epochs=null --set train.micro_batch_per_rank=32 --set train.log_every=25 \
    --set train.eval_every=100000 --set train.checkpoint_every=100000 --set train.eval_trajectories=2 \
    --set "train.output_dir=$work/run" --set tracking.enabled=false "$@" 2>&1 | grep -v "WARN\|Warning\|it/s\]" \
    | tee "$out/pretrain.log" | tail -30
cp "$work/run/eval/eval_table.txt" "$out/" 2>/dev/null
