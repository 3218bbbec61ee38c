"""slurm/pretrain.sbatch on a real two-node Slurm: each node its own host in a network namespace (own
address on a bridge, own /etc/hosts, own slurmd; scripts/slurm_up.sh with NESTOR_SLURM_NODES=2), one rank
per node and ep_size=2, so the experts live on different hosts and every all-to-all crosses the bridge.

A preempted job requeues and finishes with every step logged once; a node that dies mid-run (its link cut,
its slurmd and job processes killed: a power loss) ends the job within parallel.collective_timeout_s,
naming the rank that did not answer, with the last checkpoint intact."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, UNAVAILABLE, Slurm, job_env
from mlflow import MlflowClient

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.multiproc]

NO_NAMESPACES = 4  # scripts/slurm_up.sh: network namespaces cannot be made here
ALLOC = ["--nodes=2", "--ntasks-per-node=1"]
COMMON = ["--set", "train.log_every=1", "--set", "train.eval_every=100000", "--set", "train.eval_trajectories=1"]
TIMEOUT_S = 20


@pytest.fixture(scope="module")
def cluster():
    """Two slurmd hosts, each in its own network namespace; down (namespaces removed) afterwards."""
    env = job_env(NESTOR_SLURM_NODES="2", NESTOR_SLURM_DIR="/tmp/nestor-slurm2", NESTOR_SLURMD_TIMEOUT="10")
    up = subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm_up.sh")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
        env=env,
    )
    if up.returncode in (UNAVAILABLE, NO_NAMESPACES):
        reason = (up.stderr.strip().splitlines() or [f"slurm_up.sh exited {up.returncode}"])[-1]
        pytest.skip(f"no two-node Slurm here: {reason}")
    if up.returncode != 0:
        subprocess.run(
            ["bash", str(REPO / "scripts" / "slurm_down.sh")],
            capture_output=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            env={**env, "SLURM_CONF": "/tmp/nestor-slurm2/slurm.conf"},
        )
        raise RuntimeError(f"scripts/slurm_up.sh (two nodes) failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    match = re.search(r"^export SLURM_CONF=(\S+)$", up.stdout, re.M)
    assert match, up.stdout
    slurm = Slurm(match.group(1))
    try:
        yield slurm
    finally:
        down = subprocess.run(
            ["bash", str(REPO / "scripts" / "slurm_down.sh")],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
            env={**slurm.env(), **env},
        )
        assert down.returncode == 0, f"scripts/slurm_down.sh failed:\n{down.stdout}\n{down.stderr}"


def _bridge_bytes(node: int) -> int:
    """Bytes node<N> sent and received over its veth pair: traffic that really left the host."""
    stats = Path(f"/sys/class/net/nestor-v{node}/statistics")
    return int((stats / "rx_bytes").read_text()) + int((stats / "tx_bytes").read_text())


def _last_step(log: Path) -> int:
    found = re.findall(r"step (\d+)/\d+ \|", log.read_text(errors="replace")) if log.exists() else []
    return int(found[-1]) if found else 0


def _wait_for_step(slurm: Slurm, job: str, log: Path, step: int) -> None:
    deadline = time.monotonic() + 180
    while _last_step(log) < step:
        assert time.monotonic() < deadline, f"no step {step} in time\n{slurm.diagnostics(log)}"
        assert not slurm.finished(slurm.job(job)), f"job ended early\n{slurm.diagnostics(log)}"
        time.sleep(0.2)


def _submit(slurm: Slurm, tmp: Path, shard_args: list[str], *args: str) -> tuple[str, Path, Path]:
    log, run_dir = tmp / "job.out", tmp / "run"
    extra = shlex.join([*COMMON, *args, *shard_args])
    env = slurm.env(RUN_DIR=str(run_dir), EXTRA_ARGS=extra)
    return (
        slurm.sbatch(*ALLOC, f"--output={log}", str(REPO / "slurm" / "pretrain.sbatch"), env=env, cwd=tmp),
        log,
        run_dir,
    )


def test_two_node_job_is_preempted_requeued_and_logs_every_step_once(
    cluster: Slurm, shard_args: list[str], tmp_path: Path
) -> None:
    steps = 60
    before = _bridge_bytes(2)
    job, log, run_dir = _submit(
        cluster, tmp_path, shard_args, "--set", f"train.steps={steps}", "--set", "train.checkpoint_every=1000"
    )
    try:
        _wait_for_step(cluster, job, log, 5)
        cluster.run("scancel", "--signal=USR1", job)
        fields = cluster.wait(
            job,
            lambda f: f.get("Restarts") == "1" and cluster.finished(f),
            timeout=300,
            what="requeue and completion",
            log=log,
        )
    finally:
        cluster.cancel(job)
    text = log.read_text(errors="replace")
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", cluster.diagnostics(log)
    assert "on node[1-2]: 2 ranks" in text and "master node1:" in text
    assert len(re.findall(r"preempted at step \d+: checkpoint written, requeue requested", text)) == 1
    assert f"step {steps}/{steps} |" in text
    # each host saved its own experts: 2 blocks x 4 experts, two per rank per block
    assert len(list((run_dir / "checkpoints" / f"step{steps:08d}").glob("layer_*_expert_*"))) == 8
    assert _bridge_bytes(2) - before > 5_000_000  # the all-to-alls went over the wire
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("nestor-tiny-cpu").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == list(range(1, steps + 1))


def test_a_dead_node_ends_the_job_within_the_timeout_with_the_checkpoint_intact(
    cluster: Slurm, shard_args: list[str], tmp_path: Path
) -> None:
    from nestor_ds.engine.checkpoint_integrity import problems

    job, log, run_dir = _submit(
        cluster,
        tmp_path,
        shard_args,
        "--set",
        "train.steps=100000",
        "--set",
        "train.checkpoint_every=5",
        "--set",
        f"parallel.collective_timeout_s={TIMEOUT_S}",
    )
    try:
        _wait_for_step(cluster, job, log, 8)
        # power loss on node2: its link goes first (no goodbye packets), then everything on it
        subprocess.run(["ip", "link", "set", "nestor-v2", "down"], check=True)
        pids = subprocess.run(["ip", "netns", "pids", "nestor-n2"], capture_output=True, text=True).stdout.split()
        subprocess.run(["kill", "-9", *pids], check=False)
        killed_at = time.monotonic()
        cluster.wait(
            job,
            lambda f: f.get("JobState") != "RUNNING",
            timeout=TIMEOUT_S + 60,
            what="the job to stop running",
            log=log,
        )
        ended_after = time.monotonic() - killed_at
    finally:
        cluster.cancel(job)
    text = log.read_text(errors="replace")
    assert ended_after < TIMEOUT_S + 45, ended_after
    assert re.search(
        rf"stopped: a collective timed out after {TIMEOUT_S} s \(parallel.collective_timeout_s\): "
        r"rank 1 \(silent for \d+ s, last finished step \d+\) did not answer",
        text,
    ), text[-3000:]
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert int(latest.removeprefix("step")) >= 5
    assert problems(run_dir / "checkpoints" / latest, shared=False) == []
