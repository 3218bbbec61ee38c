# Shared part of slurm/pretrain.sbatch, slurm/finetune.sbatch and slurm/local.sh.
# Sourced, never run: it only defines functions. The caller sets NESTOR_REPO (the
# repository root) first and has `set -euo pipefail` in force.
#
# Settings, all from the environment (sbatch passes the submitting shell's
# environment to the job; a requeued job gets the same one again):
#   CONFIG      run config YAML      (default configs/nestor_tiny.yaml; tiny_cpu.yaml on CPU)
#   DS_CONFIG   DeepSpeed JSON       (default ds_configs/zero1_bf16.json; cpu_fp32.json on CPU)
#   RUN_DIR     train.output_dir: checkpoints, eval tables, summary and the MLflow
#               store (sqlite RUN_DIR/mlflow.db unless MLFLOW_TRACKING_URI or
#               tracking.uri says otherwise)
#   EXTRA_ARGS  more launch/train.py arguments, split at spaces outside '...' or "..." quotes (never
#               evaluated: $(...) and ; stay literal text), e.g.
#               EXTRA_ARGS="--set train.steps=500 --set 'data.datasets=[{name: swe_pdb}]'"
#   WEIGHTS     finetune: pre-trained checkpoint dir or .safetensors (--weights)
#   PYTHON      interpreter (default the repository's .venv/bin/python)
#   DS_ACCELERATOR=cpu   CPU mode: gloo, CPU defaults above, no GPU binding
# Relative paths are taken from the directory the job was submitted from (sbatch
# runs the job there), like any other command-line path.

nestor_say() { echo "[nestor $(date +%H:%M:%S)] $*"; }
nestor_die() { echo "[nestor] error: $*" >&2; exit 2; }

nestor_abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/$1" ;;
    esac
}

# nestor_prepare MODE DEFAULT_RUN_DIR [train.py args...]
# Resolves the settings above and leaves the launch/train.py arguments in NESTOR_ARGS.
nestor_prepare() {
    local mode="$1" default_run_dir="$2"
    shift 2
    case "$mode" in pretrain|finetune) ;; *) nestor_die "mode must be pretrain or finetune, not '$mode'" ;; esac

    PYTHON="${PYTHON:-$NESTOR_REPO/.venv/bin/python}"
    if [ "${DS_ACCELERATOR:-}" = cpu ]; then
        CONFIG="${CONFIG:-$NESTOR_REPO/configs/tiny_cpu.yaml}"
        DS_CONFIG="${DS_CONFIG:-$NESTOR_REPO/ds_configs/cpu_fp32.json}"
    else
        CONFIG="${CONFIG:-$NESTOR_REPO/configs/nestor_tiny.yaml}"
        DS_CONFIG="${DS_CONFIG:-$NESTOR_REPO/ds_configs/zero1_bf16.json}"
    fi
    CONFIG="$(nestor_abspath "$CONFIG")"
    DS_CONFIG="$(nestor_abspath "$DS_CONFIG")"
    RUN_DIR="$(nestor_abspath "${RUN_DIR:-$default_run_dir}")"
    # Fail here, in the batch shell, with a readable message rather than once per rank.
    [ -x "$PYTHON" ] || command -v "$PYTHON" >/dev/null 2>&1 || nestor_die "PYTHON=$PYTHON is not executable (run scripts/bootstrap.sh?)"
    [ -f "$CONFIG" ] || nestor_die "CONFIG=$CONFIG does not exist"
    [ -f "$DS_CONFIG" ] || nestor_die "DS_CONFIG=$DS_CONFIG does not exist"
    [ -f "$NESTOR_REPO/launch/train.py" ] || nestor_die "$NESTOR_REPO/launch/train.py missing: is NESTOR_REPO right?"

    local extra=()
    # EXTRA_ARGS is one string from the environment: split it with quotes honoured (quoted values with
    # spaces, YAML flow lists, survive) by xargs, which parses quotes but never runs what it reads (no eval)
    if [ -n "${EXTRA_ARGS:-}" ]; then
        printf '%s' "$EXTRA_ARGS" | xargs printf '' >/dev/null 2>&1 \
            || nestor_die "EXTRA_ARGS has unbalanced quotes: $EXTRA_ARGS"
        mapfile -d '' -t extra < <(printf '%s' "$EXTRA_ARGS" | xargs printf '%s\0')
    fi
    NESTOR_ARGS=(--ds_config "$DS_CONFIG" --config "$CONFIG" --mode "$mode" --set "train.output_dir=$RUN_DIR")
    if [ "$mode" = finetune ] && [ -n "${WEIGHTS:-}" ]; then
        NESTOR_ARGS+=(--weights "$(nestor_abspath "$WEIGHTS")")
    fi
    NESTOR_ARGS+=("${extra[@]}" "$@")

    # The package may be used from the source tree with a PYTHON that lacks it installed.
    export PYTHONPATH="$NESTOR_REPO${PYTHONPATH:+:$PYTHONPATH}"
    # Log lines reach the output file as they happen (stdout is a pipe under srun).
    export PYTHONUNBUFFERED=1
    # A progress bar redrawn 10 times a second only bloats a log file.
    export TQDM_MININTERVAL="${TQDM_MININTERVAL:-30}"
    export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
    export PYTHON NESTOR_REPO CONFIG DS_CONFIG RUN_DIR
}

# nestor_slurm_run MODE [train.py args...]: inside an sbatch allocation, start one
# launch/train.py per task with srun (torch env:// rendezvous, no extra launcher).
nestor_slurm_run() {
    local mode="$1"
    shift
    [ -n "${SLURM_JOB_ID:-}" ] || nestor_die "not inside a Slurm job: submit with sbatch (or use slurm/local.sh)"
    # The job id survives a requeue, so a requeued job finds its own checkpoints.
    nestor_prepare "$mode" "$NESTOR_REPO/runs/$mode-$SLURM_JOB_ID" "$@"

    # Rendezvous: rank 0 runs on the first node of the allocation; the port comes from
    # the job id so that two jobs sharing a node do not collide (and a requeued job,
    # same id, uses the same port once its previous run is gone).
    MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
    MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))
    export MASTER_ADDR MASTER_PORT
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"

    # srun options:
    #  --kill-on-bad-exit  a rank that crashes takes the others down at once, instead of
    #                      leaving them blocked in a collective until a timeout;
    #  --cpus-per-task     Slurm 22.05's srun no longer inherits it from sbatch;
    #  --label             prefix each output line with its rank;
    #  --gpu-bind=none     with --gpus-per-task=1 each task would otherwise see only its
    #                      own GPU as device 0, while DeepSpeed selects cuda:LOCAL_RANK;
    #                      unbound, every rank sees the node's GPUs and NCCL can use
    #                      peer-to-peer between them.
    local srun_opts=(--kill-on-bad-exit=1 --label --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}")
    if [ "${DS_ACCELERATOR:-}" != cpu ]; then
        if [ -n "${SLURM_GPUS_PER_TASK:-}${SLURM_GPUS_PER_NODE:-}${SLURM_GPUS:-}" ]; then
            srun_opts+=(--gpu-bind=none)
        fi
        # NCCL (GPU runs only; each may be set before sbatch, which passes it on):
        #  NCCL_SOCKET_IFNAME  interface for NCCL's bootstrap and socket transport, e.g.
        #                      "ib0", "eth0" or "^lo,docker" (exclude): set it when nodes
        #                      have several interfaces and NCCL picks an unroutable one;
        #  NCCL_IB_DISABLE=1   only on clusters without (working) InfiniBand: forces TCP;
        #  NCCL_DEBUG          WARN by default here; INFO prints the rings/trees and the
        #                      transport chosen, the first thing to read when a job hangs;
        #  TORCH_NCCL_ASYNC_ERROR_HANDLING=1 (NCCL_ASYNC_ERROR_HANDLING before torch 2.2)
        #                      a failed or timed-out collective aborts the process, so
        #                      --kill-on-bad-exit ends the job instead of it hanging.
        export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
        export TORCH_NCCL_ASYNC_ERROR_HANDLING="${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}"
        export NCCL_ASYNC_ERROR_HANDLING="${NCCL_ASYNC_ERROR_HANDLING:-$TORCH_NCCL_ASYNC_ERROR_HANDLING}"
    fi

    # USR1 is meant for the ranks (--signal=USR1@N without "B:" reaches only the job
    # steps); if it also reaches this shell (scancel --full), log it instead of dying.
    trap 'nestor_say "batch shell got SIGUSR1: the ranks checkpoint and requeue"' USR1

    nestor_say "job $SLURM_JOB_ID ($mode) run $((${SLURM_RESTART_COUNT:-0} + 1)) (restart count ${SLURM_RESTART_COUNT:-0})" \
        "on ${SLURM_JOB_NODELIST}: ${SLURM_NTASKS:-?} ranks, ${SLURM_CPUS_PER_TASK:-1} CPU(s) each," \
        "master ${MASTER_ADDR}:${MASTER_PORT}"
    nestor_say "run dir $RUN_DIR"
    nestor_say "launch/train.py ${NESTOR_ARGS[*]}"

    # One task per GPU (or CPU rank). The per-task variables exist only inside each
    # task, so they are read there. `trap '' USR1` before exec makes a USR1 that
    # arrives before Python has installed the trainer's handler harmless (ignored)
    # instead of fatal; the trainer's signal.signal() replaces the ignore.
    local rc=0
    srun "${srun_opts[@]}" bash -c '
        export RANK="$SLURM_PROCID" LOCAL_RANK="$SLURM_LOCALID" WORLD_SIZE="$SLURM_NTASKS"
        trap "" USR1
        exec "$PYTHON" "$NESTOR_REPO/launch/train.py" "$@"' nestor-rank "${NESTOR_ARGS[@]}" || rc=$?
    # After a preemption the trainer has already asked Slurm to requeue this job; this
    # shell may be killed by the requeue before it gets here, which is fine.
    nestor_say "srun finished with status $rc"
    return "$rc"
}
