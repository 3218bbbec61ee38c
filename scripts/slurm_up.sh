#!/usr/bin/env bash
# Bring up a real one-node Slurm (slurmctld + slurmd + munge) on this machine, for
# the Slurm tests and for trying slurm/*.sbatch by hand. See DESIGN.md section 8 for
# why each setting is there. Must run as root (it installs packages and starts
# munged as the munge user).
#
#   eval "$(scripts/slurm_up.sh)"     # stdout is only the `export SLURM_CONF=...` line
#
# Idempotent: packages are installed only when missing, daemons that already answer
# with the same configuration are left running. Progress goes to stderr.
#
# Exit status: 0 up; 3 the packages are missing and cannot be installed (callers
# may treat that as "no Slurm here"); anything else is a real failure.
#
# Environment: NESTOR_SLURM_DIR (scratch directory, default /tmp/nestor-slurm),
#              NESTOR_SLURM_PARTITION (default "debug").
set -euo pipefail

dir="${NESTOR_SLURM_DIR:-/tmp/nestor-slurm}"
partition="${NESTOR_SLURM_PARTITION:-debug}"
conf="$dir/slurm.conf"

say() { echo "[slurm_up] $*" >&2; }
die() { say "error: $1"; exit "${2:-1}"; }

# --- 1. packages ---------------------------------------------------------------
# Debian's slurm-wlm 22.05 and munge; --no-install-recommends keeps it to ~20 s and
# nothing is started by the packages themselves (no systemd in these machines).
need=(slurmctld slurmd sbatch srun scontrol sinfo squeue scancel munged munge unmunge)
missing() { local c; for c in "${need[@]}"; do command -v "$c" >/dev/null 2>&1 || return 0; done; return 1; }
if missing; then
    [ "$(id -u)" -eq 0 ] || die "Slurm/munge are not installed and installing them needs root" 3
    command -v apt-get >/dev/null 2>&1 || die "Slurm/munge are not installed and there is no apt-get" 3
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge; } >"/tmp/nestor-slurm-apt.log" 2>&1; then
        tail -n 20 /tmp/nestor-slurm-apt.log >&2 || true
        die "apt-get could not install slurm-wlm/munge (log: /tmp/nestor-slurm-apt.log)" 3
    fi
    missing && die "slurm-wlm/munge installed but some commands are still missing: ${need[*]}" 3
fi
[ "$(id -u)" -eq 0 ] || die "run as root: munged is started as the munge user and slurmd as root"

mkdir -p "$dir"/{state,spool,log}

# --- 2. munge ------------------------------------------------------------------
# The key must belong to munge with mode 600, /run/munge must exist and belong to
# munge (it is on tmpfs, so gone after a reboot), and munged refuses to run as root.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating /etc/munge/munge.key"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
    chmod 700 /etc/munge
    chmod 600 /etc/munge/munge.key
    chmod 755 /run/munge
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock  # left by a munged that died
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged
    touch "$dir/munged.ours"  # slurm_down.sh stops munged only if we started it
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munged does not answer (munge -n | unmunge)"
fi

# --- 3. slurm.conf -------------------------------------------------------------
host="$(hostname -s)"
# Boards/sockets/cores/threads/memory exactly as slurmd sees them: if the node line
# promised more, slurmd would register as invalid and the node would be drained.
node_line="$(slurmd -C | head -n 1)"
case "$node_line" in NodeName=*) ;; *) die "unexpected 'slurmd -C' output: $node_line" ;; esac
node_line="$(sed "s/^NodeName=[^ ]*/NodeName=$host/" <<<"$node_line") NodeAddr=127.0.0.1 State=UNKNOWN"

new="$(mktemp)"
trap 'rm -f "$new"' EXIT
cat >"$new" <<EOF
# Written by scripts/slurm_up.sh: a one-node Slurm on localhost (DESIGN.md section 8).
ClusterName=nestor
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Job credentials live cred_expire seconds and a requeued job waits for that before
# it may run again: the default 120 s would make every requeue cost two minutes.
# Values below 5 are ignored by Slurm.
AuthInfo=cred_expire=10
# No cgroups in these containers: track processes by /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
# slurmctld refuses to start if the default mail program is missing.
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A node that went down comes back by itself as soon as its slurmd registers.
ReturnToService=2
# Batch jobs may be requeued (scontrol requeue from the trainer, node failures).
JobRequeue=1
SchedulerType=sched/backfill
# Scheduler passes every 2 s (default 60 s / 30 s) so a requeued job restarts quickly.
SchedulerParameters=sched_interval=2,bf_interval=2
# Finished jobs stay visible to 'scontrol show job' for 5 minutes (no accounting DB).
MinJobAge=300
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$dir/state
# The slurmd spool directory must exist beforehand; '%n' is not expanded here.
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
$node_line
PartitionName=$partition Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
up() { pid_alive "$dir/slurmctld.pid" && pid_alive "$dir/slurmd.pid" && SLURM_CONF="$conf" scontrol ping 2>/dev/null | grep -q "is UP"; }

if [ -f "$conf" ] && cmp -s "$new" "$conf" && up; then
    say "slurmctld and slurmd already running with $conf"
else
    if up || pid_alive "$dir/slurmctld.pid" || pid_alive "$dir/slurmd.pid"; then
        say "restarting the daemons (configuration changed or one of them is down)"
        SLURM_CONF="$conf" "$(dirname "${BASH_SOURCE[0]}")/slurm_down.sh" --keep-munge >&2
    fi
    cp "$new" "$conf"
    export SLURM_CONF="$conf"
    say "starting slurmctld and slurmd ($conf)"
    # -c: cold start, forget jobs from an earlier session of this scratch directory.
    slurmctld -c -f "$conf"
    slurmd -f "$conf"
fi
export SLURM_CONF="$conf"

# --- 4. wait for the node --------------------------------------------------------
state=""
for i in $(seq 150); do
    state="$(sinfo -h -n "$host" -o %t 2>/dev/null | head -n 1 || true)"
    case "$state" in
        idle|mix|alloc) break ;;
        down*|drain*|drng*|fail*|inval*)
            # e.g. left down by an earlier slurmctld: it registered fine now, so resume it
            (( i % 10 == 0 )) && scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
done
case "$state" in
    idle|mix|alloc) ;;
    *) tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
       die "node $host is '${state:-not listed}' after 30 s (logs in $dir/log)" ;;
esac
say "node $host is $state (partition $partition)"
echo "export SLURM_CONF=$conf"
