#!/usr/bin/env bash
# Stop the one-node Slurm that scripts/slurm_up.sh started: cancel every job, shut
# slurmctld and slurmd down, then stop munged if slurm_up.sh was the one that started
# it. Safe to run when nothing is running (idempotent). Logs and state stay in the
# scratch directory for post-mortems; slurm_up.sh cold-starts over them.
#
#   scripts/slurm_down.sh [--keep-munge] [--keep-network]
set -euo pipefail

dir="${NESTOR_SLURM_DIR:-/tmp/nestor-slurm}"
export SLURM_CONF="$dir/slurm.conf"
keep_munge=0
keep_network=0
for arg in "$@"; do
    case "$arg" in
        --keep-munge) keep_munge=1 ;;
        --keep-network) keep_network=1 ;;  # slurm_up.sh restarting the daemons over its namespaces
        *) say "unknown option $arg"; exit 2 ;;
    esac
done

say() { echo "[slurm_down] $*" >&2; }
pid_of() { [ -s "$1" ] && cat "$1" || true; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# Wait up to 10 s for pid $1 (named $2 in messages) to exit, then SIGKILL it.
stop_pid() {
    local pid="$1" name="$2" i
    alive "$pid" || return 0
    for i in $(seq 100); do alive "$pid" || return 0; sleep 0.1; done
    say "$name (pid $pid) still running after 10 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

ctld="$(pid_of "$dir/slurmctld.pid")"
# one slurmd (slurmd.pid), or one per node in two-node mode (slurmd-node<i>.pid)
slurmd="$(cat "$dir"/slurmd.pid "$dir"/slurmd-*.pid 2>/dev/null | tr '\n' ' ' || true)"
if [ -f "$SLURM_CONF" ] && alive "$ctld"; then
    # Cancel jobs first so no training processes outlive the cluster (scontrol
    # shutdown alone leaves running job steps behind).
    jobs="$(squeue -h -o %i 2>/dev/null || true)"
    if [ -n "$jobs" ]; then
        say "cancelling jobs: $(echo $jobs)"
        # scancel sends SIGTERM, which the trainer answers with a checkpoint and a
        # `scontrol requeue`, so the job would come back; with Requeue=0 that request
        # is refused and the job really ends.
        for job in $jobs; do scontrol update JobId="$job" Requeue=0 >/dev/null 2>&1 || true; done
        # shellcheck disable=SC2086  # one job id per word
        scancel $jobs 2>/dev/null || true
        # Up to 40 s: Slurm waits KillWait (30 s) before SIGKILL for tasks that ignore SIGTERM.
        for _ in $(seq 400); do [ -z "$(squeue -h -o %i 2>/dev/null || true)" ] && break; sleep 0.1; done
    fi
    say "scontrol shutdown"
    scontrol shutdown >/dev/null 2>&1 || kill -TERM $ctld $slurmd 2>/dev/null || true
elif [ -n "$ctld$slurmd" ]; then
    # shellcheck disable=SC2086  # pids, one per word
    kill -TERM $ctld $slurmd 2>/dev/null || true
fi
# scontrol shutdown tells slurmd too, but a slurmd that did not hear it must not linger.
stop_pid "$ctld" slurmctld
for pid in $slurmd; do
    alive "$pid" && { sleep 1; alive "$pid" && kill -TERM "$pid" 2>/dev/null || true; }
    stop_pid "$pid" slurmd
done
rm -f "$dir/slurmctld.pid" "$dir"/slurmd.pid "$dir"/slurmd-*.pid

# two-node mode: whatever still runs in a node's namespace (job steps of a killed
# slurmd) goes with it, then the namespaces, veth pairs and bridge
two_nodes=0
grep -q "^NodeName=node1 " "$SLURM_CONF" 2>/dev/null && [ "$keep_network" = 0 ] && two_nodes=1
for ns in nestor-n1 nestor-n2; do
    [ "$two_nodes" = 1 ] || break
    if ip netns list 2>/dev/null | grep -qw "$ns"; then
        pids="$(ip netns pids "$ns" 2>/dev/null || true)"
        # shellcheck disable=SC2086
        [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
    fi
    ip netns del "$ns" 2>/dev/null || true
    # deleting our end of the veth pair removes the node's too, even while a dying
    # process still pins its namespace
    ip link del "nestor-v${ns#nestor-n}" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
done
[ "$two_nodes" = 1 ] && { ip link del nestor-br0 2>/dev/null || true; }

if [ "$keep_munge" -eq 0 ] && [ -f "$dir/munged.ours" ]; then
    munged_pid="$(pid_of /run/munge/munged.pid)"
    if alive "$munged_pid"; then
        say "stopping munged (pid $munged_pid)"
        kill -TERM "$munged_pid" 2>/dev/null || true
        stop_pid "$munged_pid" munged
    fi
    rm -f "$dir/munged.ours"
fi
say "down"
