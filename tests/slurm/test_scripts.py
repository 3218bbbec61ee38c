"""The job scripts without Slurm: they parse, refuse to run outside a job, and slurm/local.sh
runs the same job on this machine with torchrun."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = [
    "slurm/pretrain.sbatch",
    "slurm/finetune.sbatch",
    "slurm/common.sh",
    "slurm/local.sh",
    "scripts/slurm_up.sh",
    "scripts/slurm_down.sh",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_parses(script: str) -> None:
    out = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_sbatch_script_needs_a_job(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no SLURM_* variables
    out = subprocess.run(
        ["bash", str(REPO / "slurm" / "pretrain.sbatch")], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert out.returncode == 2 and "not inside a Slurm job" in out.stderr, out.stderr


@pytest.mark.slow
@pytest.mark.multiproc
def test_local_script_runs_two_ranks(shard_args: list[str], tmp_path: Path) -> None:
    steps = 6
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1",
        NPROC="2",
        RUN_DIR="run",
        EXTRA_ARGS=shlex.join(
            ["--set", f"train.steps={steps}", "--set", "train.log_every=1", "--set", "train.eval_trajectories=1"]
        ),
    )
    if not (REPO / ".venv" / "bin" / "python").exists():
        env["PYTHON"] = sys.executable
    out = subprocess.run(
        ["bash", str(REPO / "slurm" / "local.sh"), "pretrain", *shard_args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    run_dir = tmp_path / "run"  # RUN_DIR is relative to where the script was started
    assert "local pretrain: 2 ranks (torchrun)" in out.stdout
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step{steps:08d}"
    assert json.loads((run_dir / "summary.json").read_text())
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("nestor-tiny-cpu").experiment_id])
    assert run.data.params["world_size"] == "2"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == list(range(1, steps + 1))


def test_extra_args_are_split_never_run(tmp_path: Path) -> None:
    """EXTRA_ARGS keeps quoted values whole and is never evaluated: a $(...) in it stays text."""
    probe = tmp_path / "pwned"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        DS_ACCELERATOR="cpu",
        NPROC="1",
        RUN_DIR="run",
        PYTHON=sys.executable,
        EXTRA_ARGS=f"--set 'data.datasets=[{{name: swe_pdb}}]' --set x=$(touch {probe})",
    )
    out = subprocess.run(
        ["bash", str(REPO / "slurm" / "local.sh"), "pretrain"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert not probe.exists()
    assert out.returncode != 0 and f"x=$(touch {probe})" in out.stderr + out.stdout  # named as text
    env["EXTRA_ARGS"] = "--set 'unbalanced"
    out = subprocess.run(
        ["bash", str(REPO / "slurm" / "local.sh"), "pretrain"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 2 and "EXTRA_ARGS has unbalanced quotes" in out.stderr
