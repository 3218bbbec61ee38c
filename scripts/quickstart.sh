#!/usr/bin/env bash
# The whole job on one machine: environment, data, pre-training, evaluation, fine-tuning on a
# held-out data set, evaluation again, MLflow, and a report. Defaults fit a 2-core CPU machine.
#
#   bash scripts/quickstart.sh                       # 2 CPU ranks, ep_size=2, generated data
#   GPUS=8 DS_CONFIG=ds_configs/zero2_bf16.json CONFIG=configs/nestor_tiny.yaml bash scripts/quickstart.sh
#   DATA=/data/shards bash scripts/quickstart.sh      # shards you made with 'nestor-ds data shard'
#   PRETRAIN_STEPS=2000 bash scripts/quickstart.sh    # any --set override: EXTRA_ARGS="--set train.seed=1"
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT_DIR:-runs/quickstart}"
gpus="${GPUS:-2}"
config="${CONFIG:-configs/quickstart.yaml}"
finetune_config="${FINETUNE_CONFIG:-configs/quickstart_finetune.yaml}"
extra=(${EXTRA_ARGS:-})
start=$(date +%s)
phase_start=$start
phase_name=""
phases=()
say() {  # a new phase begins: the one before it ends, with its time kept for the summary
    local now; now=$(date +%s)
    [ -n "$phase_name" ] && phases+=("$(printf '%5ds  %s' "$(( now - phase_start ))" "$phase_name")")
    phase_name="$*"; phase_start=$now
    printf '\n=== %s (%ds)\n' "$*" "$(( now - start ))"
}

say "environment"
bash scripts/bootstrap.sh
py=.venv/bin/python
if ! $py -c "import torch; exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    export DS_ACCELERATOR=cpu  # gloo across local CPU processes
fi
ds_config="${DS_CONFIG:-ds_configs/cpu_fp32.json}"

shards="${DATA:-$out/shards}"
if [ -z "${DATA:-}" ] && [ ! -f "$shards/.complete" ]; then
    say "generating the small synthetic suite with our solvers (original file layouts)"
    .venv/bin/nestor-ds data generate --suite small --out "$out/raw" --trajectories "${TRAJECTORIES:-16}"
    say "sharding it into WebDataset tars"
    .venv/bin/nestor-ds data shard --from-suite "$out/raw" --out "$shards" --per-shard 2
    touch "$shards/.complete"
fi

store="sqlite:///$root/$out/mlflow.db"
common=(--set "data.root=$shards" --set "tracking.uri=$store" --no-resume "${extra[@]}")
launch=(.venv/bin/deepspeed --num_gpus "$gpus" --master_port "${MASTER_PORT:-29517}" launch/train.py)

say "pre-training on $gpus ranks (expert parallel), then evaluation"
rm -rf "$out/pretrain" "$out/finetune"
"${launch[@]}" --ds_config "$ds_config" --config "$config" \
    --set "train.output_dir=$out/pretrain" ${PRETRAIN_STEPS:+--set train.steps=$PRETRAIN_STEPS} "${common[@]}"

say "fine-tuning on the held-out data set, then evaluation"
"${launch[@]}" --ds_config "$ds_config" --config "$finetune_config" --mode finetune \
    --weights "$out/pretrain/checkpoints" --set "train.output_dir=$out/finetune" \
    ${FINETUNE_STEPS:+--set train.steps=$FINETUNE_STEPS} "${common[@]}"

say "report"
.venv/bin/nestor-ds report --run "pre-training=$out/pretrain" --run "fine-tuning=$out/finetune" \
    --out "$out/report" --log-to-mlflow

say "done"
echo "results:  $root/$out"
echo "report:   $root/$out/report/REPORT.md"
echo "MLflow:   .venv/bin/mlflow ui --backend-store-uri $store"
echo
echo "pre-training (zero-shot on its own test sets):"
cat "$out/pretrain/eval/eval_table.txt"
echo
echo "fine-tuning (held-out data set):"
cat "$out/finetune/eval/eval_table.txt"
echo
echo "time per phase:"
printf '  %s\n' "${phases[@]}"
printf '  %5ds  %s\n' "$(( $(date +%s) - start ))" "total"
