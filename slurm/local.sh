#!/usr/bin/env bash
# The Slurm job on one machine without Slurm: same settings (CONFIG, DS_CONFIG,
# RUN_DIR, EXTRA_ARGS, WEIGHTS, PYTHON, DS_ACCELERATOR; see slurm/common.sh), same
# launch/train.py arguments, but the ranks are started by torchrun instead of srun.
#
#   slurm/local.sh [pretrain|finetune] [launch/train.py args...]
#   NPROC=2 RUN_DIR=runs/try slurm/local.sh pretrain --set train.steps=100
#
# NPROC: ranks to start (default: the number of GPUs, or 2 CPU ranks without GPUs,
# matching configs/tiny_cpu.yaml's ep_size=2). Without GPUs DS_ACCELERATOR=cpu is set.
# A rerun with the same RUN_DIR resumes from its latest checkpoint, as a requeued
# Slurm job does. There is no requeue here: a SIGUSR1 or SIGTERM sent to the ranks
# makes the trainer checkpoint at the next step and stop; run the script again to go on.
set -euo pipefail

NESTOR_REPO="${NESTOR_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
# shellcheck source=common.sh
source "$NESTOR_REPO/slurm/common.sh"

mode=pretrain
case "${1:-}" in pretrain|finetune) mode="$1"; shift ;; esac

gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
    gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
fi
if [ "$gpus" -eq 0 ] && [ -z "${DS_ACCELERATOR:-}" ]; then
    export DS_ACCELERATOR=cpu  # DeepSpeed would guess too; saying it picks the CPU defaults
fi
if [ "$gpus" -gt 0 ] && [ "${DS_ACCELERATOR:-}" != cpu ]; then
    nproc="${NPROC:-$gpus}"
else
    nproc="${NPROC:-2}"
fi

nestor_prepare "$mode" "$NESTOR_REPO/runs/local-$mode" "$@"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

nestor_say "local $mode: $nproc ranks (torchrun), accelerator ${DS_ACCELERATOR:-auto}, run dir $RUN_DIR"
nestor_say "launch/train.py ${NESTOR_ARGS[*]}"
# --standalone: a private rendezvous on localhost with a free port, so several local
# runs can coexist.
exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$nproc" \
    "$NESTOR_REPO/launch/train.py" "${NESTOR_ARGS[@]}"
