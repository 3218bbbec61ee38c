"""slurm/*.sbatch on a real one-node Slurm: two CPU ranks (gloo, ep_size=2) started by srun; a
pre-training run to completion, a fine-tuning run from its checkpoint, and a preemption (SIGUSR1)
that checkpoints, requeues and resumes into the same MLflow run."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.multiproc]

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = REPO / "slurm"
PRETRAIN_STEPS = 20
# Two ranks on one node. --ntasks-per-node overrides the script's GPUs-per-node value,
# which a 2-core node could not satisfy.
ALLOC = ["--nodes=1", "--ntasks=2", "--ntasks-per-node=2"]
COMMON = ["--set", "train.log_every=1", "--set", "train.eval_every=1000", "--set", "train.eval_trajectories=1"]


def _single_run(run_dir: Path):
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("nestor-tiny-cpu").experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


def _loss_steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))


def _run_job(slurm, script: Path, *args: str, env: dict[str, str], cwd: Path, log: Path) -> tuple[str, dict]:
    """Submit, wait for the end (cancelling the job if the test gives up), return (job id, fields)."""
    job = slurm.sbatch(*ALLOC, f"--output={log}", str(script), *args, env=env, cwd=cwd)
    try:
        fields = slurm.wait(job, slurm.finished, timeout=240, what="end", log=log)
    finally:
        slurm.cancel(job)
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", slurm.diagnostics(log)
    assert fields["Restarts"] == "0"
    return job, fields


@pytest.fixture(scope="module")
def pretrained(slurm, shard_args: list[str], tmp_path_factory) -> tuple[str, dict, Path, Path]:
    """A 20-step pre-training job (checkpoints every 10 steps): (job id, job fields, run dir, output file)."""
    tmp = tmp_path_factory.mktemp("pretrain-job")
    run_dir, log = tmp / "run", tmp / "job.out"
    # Settings through the environment, as documented; EXTRA_ARGS holds a quoted value with spaces.
    extra = shlex.join(
        [*COMMON, "--set", f"train.steps={PRETRAIN_STEPS}", "--set", "train.checkpoint_every=10", *shard_args]
    )
    env = slurm.env(RUN_DIR=str(run_dir), EXTRA_ARGS=extra)
    # Submitted from outside the repository: the script must find it through the job record.
    job, fields = _run_job(slurm, SLURM_DIR / "pretrain.sbatch", env=env, cwd=tmp, log=log)
    return job, fields, run_dir, log


def test_pretrain_job_runs_to_completion(pretrained) -> None:
    job, fields, run_dir, log = pretrained
    steps = PRETRAIN_STEPS
    text = log.read_text(errors="replace")
    assert f"job {job} (pretrain) run 1 (restart count 0)" in text and "2 ranks" in text
    assert f"master {fields['BatchHost']}:{20000 + int(job) % 20000}" in text

    ckpt = run_dir / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == f"step{steps:08d}"
    assert (ckpt / "step00000010").is_dir() and (ckpt / f"step{steps:08d}").is_dir()
    # each of the 2 expert-parallel ranks saved its experts
    assert len(list((ckpt / f"step{steps:08d}").glob("layer_*_expert_*"))) == 2 * 4
    assert (run_dir / "eval" / "eval_table.json").is_file() and (run_dir / "summary.json").is_file()

    client, run = _single_run(run_dir)
    assert run.info.status == "FINISHED" and run.data.tags["mode"] == "pretrain"
    assert run.data.params["world_size"] == "2" and run.data.params["ep_size"] == "2"
    assert _loss_steps(client, run.info.run_id) == list(range(1, steps + 1))


def test_finetune_job_from_pretrained_checkpoint(slurm, pretrained, shard_args: list[str], tmp_path: Path) -> None:
    _, _, pretrain_dir, _ = pretrained
    steps, log = 8, tmp_path / "job.out"
    env = slurm.env(RUN_DIR=str(tmp_path / "run"), WEIGHTS=str(pretrain_dir / "checkpoints"))
    job, _ = _run_job(
        slurm,
        SLURM_DIR / "finetune.sbatch",
        *COMMON,
        "--set",
        f"train.steps={steps}",
        "--set",
        "data.noise_scale=0",
        *shard_args,
        env=env,
        cwd=REPO,
        log=log,
    )
    text = log.read_text(errors="replace")
    assert f"job {job} (finetune) run 1" in text
    assert f"--weights {pretrain_dir / 'checkpoints'}" in text
    client, run = _single_run(tmp_path / "run")
    assert run.info.status == "FINISHED" and run.data.tags["mode"] == "finetune"
    assert _loss_steps(client, run.info.run_id) == list(range(1, steps + 1))


def test_preempted_job_requeues_and_resumes(slurm, shard_args: list[str], tmp_path: Path) -> None:
    steps = 200
    log = tmp_path / "job.out"
    # Only the preemption checkpoint exists mid-run: nothing can be resumed from elsewhere.
    args = [*COMMON, "--set", f"train.steps={steps}", "--set", "train.checkpoint_every=1000", *shard_args]
    # Arguments after the script go to launch/train.py; RUN_DIR relative to the submit directory.
    env = slurm.env(RUN_DIR="run")
    job = slurm.sbatch(*ALLOC, f"--output={log}", str(SLURM_DIR / "pretrain.sbatch"), *args, env=env, cwd=tmp_path)
    run_dir = tmp_path / "run"
    timeline: list[tuple[float, str]] = []
    try:
        deadline = time.monotonic() + 180
        while _last_step(log) < 5:  # training is under way (handler installed long before)
            assert time.monotonic() < deadline, f"no training progress in time\n{slurm.diagnostics(log)}"
            assert not slurm.finished(slurm.job(job)), f"job ended before the signal\n{slurm.diagnostics(log)}"
            time.sleep(0.2)
        signalled_at_step = _last_step(log)
        t0 = time.monotonic()
        slurm.run("scancel", "--signal=USR1", job)  # reaches the srun'd tasks, not the batch shell

        def watch(fields: dict[str, str]) -> bool:
            state = f"{fields.get('JobState')} restarts={fields.get('Restarts')}"
            if not timeline or timeline[-1][1] != state:
                timeline.append((time.monotonic() - t0, state))
            return fields.get("Restarts") == "1" and slurm.finished(fields)

        fields = slurm.wait(job, watch, timeout=240, what="requeue and completion", log=log, poll=0.25)
    finally:
        slurm.cancel(job)
    print("after SIGUSR1:", ", ".join(f"{t:.1f}s {s}" for t, s in timeline))
    text = log.read_text(errors="replace")
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", slurm.diagnostics(log)
    assert fields["Restarts"] == "1"
    assert any(s.startswith("PENDING") for _, s in timeline), timeline  # it really went back to the queue

    # --open-mode=append: both runs are in the one output file
    assert f"job {job} (pretrain) run 1 (restart count 0)" in text
    assert f"job {job} (pretrain) run 2 (restart count 1)" in text
    preempted = re.findall(r"preempted at step (\d+): checkpoint written, requeue requested", text)
    assert len(preempted) == 1, text[-4000:]
    at = int(preempted[0])
    assert signalled_at_step <= at < steps
    assert re.search(rf"resumed from \S*step{at:08d} at step {at}\b", text)
    assert "step 1/200 |" in text and f"step {steps}/{steps} |" in text
    assert (run_dir / "checkpoints" / f"step{at:08d}").is_dir()
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step{steps:08d}"

    # one MLflow run across both Slurm runs, every step logged exactly once
    client, run = _single_run(run_dir)
    assert run.info.status == "FINISHED"
    assert _loss_steps(client, run.info.run_id) == list(range(1, steps + 1))


def _last_step(log: Path) -> int:
    if not log.exists():
        return 0
    found = re.findall(r"step (\d+)/\d+ \|", log.read_text(errors="replace"))
    return int(found[-1]) if found else 0
