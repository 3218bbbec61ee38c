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
#              NESTOR_SLURM_PARTITION (default "debug"),
#              NESTOR_SLURM_NODES (1 or 2, default 1). With 2, each node is its own
#              host on the network: a network namespace nestor-n<i> with address
#              10.77.0.1<i> on a veth pair into the bridge nestor-br0 (10.77.0.1, where
#              slurmctld listens), its own /etc/hosts (/etc/netns/nestor-n<i>/hosts: this
#              machine's name is the node's address there) and its own slurmd. Files stay
#              shared, as on a cluster with a shared file system.
#
# Exit status 4: network namespaces cannot be made here (two-node mode only).
set -euo pipefail

dir="${NESTOR_SLURM_DIR:-/tmp/nestor-slurm}"
partition="${NESTOR_SLURM_PARTITION:-debug}"
nodes="${NESTOR_SLURM_NODES:-1}"
conf="$dir/slurm.conf"
case "$nodes" in 1|2) ;; *) echo "[slurm_up] error: NESTOR_SLURM_NODES must be 1 or 2, not $nodes" >&2; exit 2 ;; esac

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

# --- 3. the nodes' network (two-node mode) --------------------------------------
host="$(hostname -s)"
ctl_addr=127.0.0.1
node_names=("$host")
if [ "$nodes" = 2 ]; then
    ctl_addr=10.77.0.1
    node_names=(node1 node2)
    if ! ip link show nestor-br0 >/dev/null 2>&1; then
        ip link add nestor-br0 type bridge 2>/dev/null || die "cannot create a bridge (no CAP_NET_ADMIN?)" 4
    fi
    ip addr replace "$ctl_addr/24" dev nestor-br0
    ip link set nestor-br0 up
    for i in 1 2; do
        ns="nestor-n$i"
        if ! ip netns list | grep -qw "$ns"; then
            ip netns add "$ns" 2>/dev/null || die "cannot create network namespace $ns (not permitted here)" 4
        fi
        if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
            ip link del "nestor-v$i" 2>/dev/null || true  # left over from an earlier namespace
            ip link add "nestor-v$i" type veth peer name eth0 netns "$ns"
        fi
        ip link set "nestor-v$i" master nestor-br0 up
        ip -n "$ns" addr replace "10.77.0.1$i/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        mkdir -p "/etc/netns/$ns"
        {
            echo "127.0.0.1 localhost"
            echo "10.77.0.1 slurmctld"
            echo "10.77.0.11 node1$([ "$i" = 1 ] && echo " $host")"
            echo "10.77.0.12 node2$([ "$i" = 2 ] && echo " $host")"
        } >"/etc/netns/$ns/hosts"
        mkdir -p "$dir/spool/node$i"
    done
    # a closed port answers "refused" only when the packets get through; a new bridge port
    # forwards after a moment
    reached=0
    for _ in $(seq 50); do
        answer="$(ip netns exec nestor-n2 timeout 2 bash -c 'exec 3<>/dev/tcp/10.77.0.11/9' 2>&1 || true)"
        case "$answer" in *refused*) reached=1; break ;; esac
        sleep 0.1
    done
    [ "$reached" = 1 ] || die "node2 cannot reach node1 (10.77.0.11) over the bridge nestor-br0"
fi

# --- 4. slurm.conf -------------------------------------------------------------
# Boards/sockets/cores/threads/memory exactly as slurmd sees them: if the node line
# promised more, slurmd would register as invalid and the node would be drained.
node_line="$(slurmd -C | head -n 1)"
case "$node_line" in NodeName=*) ;; *) die "unexpected 'slurmd -C' output: $node_line" ;; esac
node_lines=""
for i in "${!node_names[@]}"; do
    addr=127.0.0.1
    [ "$nodes" = 2 ] && addr="10.77.0.1$((i + 1))"
    node_lines+="$(sed "s/^NodeName=[^ ]*/NodeName=${node_names[$i]}/" <<<"$node_line") NodeAddr=$addr State=UNKNOWN"$'\n'
done
slurmd_files="SlurmdSpoolDir=$dir/spool
SlurmdPidFile=$dir/slurmd.pid
SlurmdLogFile=$dir/log/slurmd.log"
if [ "$nodes" = 2 ]; then
    # %n: the node name, one spool, pid and log file per slurmd
    slurmd_files="SlurmdSpoolDir=$dir/spool/%n
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmdLogFile=$dir/log/slurmd-%n.log"
fi

new="$(mktemp)"
trap 'rm -f "$new"' EXIT
cat >"$new" <<EOF
# Written by scripts/slurm_up.sh: a $nodes-node Slurm on this machine (DESIGN.md section 8).
ClusterName=nestor
SlurmctldHost=$host($ctl_addr)
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
# The slurmd spool directories must exist beforehand.
$slurmd_files
SlurmctldPidFile=$dir/slurmctld.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmctldTimeout=30
# A node whose slurmd stops answering is DOWN after this many seconds (its jobs NODE_FAIL).
SlurmdTimeout=${NESTOR_SLURMD_TIMEOUT:-60}
${node_lines}PartitionName=$partition Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
slurmd_pid() { if [ "$nodes" = 2 ]; then echo "$dir/slurmd-$1.pid"; else echo "$dir/slurmd.pid"; fi; }
daemons_alive() {
    local n
    pid_alive "$dir/slurmctld.pid" || return 1
    for n in "${node_names[@]}"; do pid_alive "$(slurmd_pid "$n")" || return 1; done
}
any_alive() {
    local n
    pid_alive "$dir/slurmctld.pid" && return 0
    for n in "${node_names[@]}"; do pid_alive "$(slurmd_pid "$n")" && return 0; done
    return 1
}
up() { daemons_alive && SLURM_CONF="$conf" scontrol ping 2>/dev/null | grep -q "is UP"; }

if [ -f "$conf" ] && cmp -s "$new" "$conf" && up; then
    say "slurmctld and slurmd already running with $conf"
else
    if any_alive; then
        say "restarting the daemons (configuration changed or one of them is down)"
        SLURM_CONF="$conf" NESTOR_SLURM_NODES="$nodes" "$(dirname "${BASH_SOURCE[0]}")/slurm_down.sh" --keep-munge --keep-network >&2
    fi
    cp "$new" "$conf"
    export SLURM_CONF="$conf"
    say "starting slurmctld and ${#node_names[@]} slurmd ($conf)"
    # -c: cold start, forget jobs from an earlier session of this scratch directory.
    slurmctld -c -f "$conf"
    if [ "$nodes" = 2 ]; then
        # Not `ip netns exec`: it mounts a fresh /sys without the cgroup file systems slurmd
        # needs. Join the network namespace, and in a private mount namespace put the node's
        # own /etc/hosts in place; the job steps slurmd starts inherit both.
        for i in 1 2; do
            nsenter --net="/run/netns/nestor-n$i" unshare --mount --propagation private \
                bash -c 'mount --bind "/etc/netns/$1/hosts" /etc/hosts && exec slurmd -f "$2" -N "$3"' \
                slurmd-ns "nestor-n$i" "$conf" "node$i"
        done
    else
        slurmd -f "$conf"
    fi
fi
export SLURM_CONF="$conf"

# --- 5. wait for the nodes -------------------------------------------------------
for node in "${node_names[@]}"; do
    state=""
    for i in $(seq 150); do
        state="$(sinfo -h -n "$node" -o %t 2>/dev/null | head -n 1 || true)"
        case "$state" in
            idle|mix|alloc) break ;;
            down*|drain*|drng*|fail*|inval*)
                # e.g. left down by an earlier slurmctld: it registered fine now, so resume it
                (( i % 10 == 0 )) && scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.2
    done
    case "$state" in
        idle|mix|alloc) ;;
        *) tail -n 20 "$dir"/log/*.log >&2 || true
           die "node $node is '${state:-not listed}' after 30 s (logs in $dir/log)" ;;
    esac
    say "node $node is $state (partition $partition)"
done
echo "export SLURM_CONF=$conf"
