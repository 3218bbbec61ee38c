from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from nestor_ds.data.convert import shard_dataset
from nestor_ds.data.generate import Size, generate_suite

REPO = Path(__file__).resolve().parents[2]
PRETRAIN_SETS = ["ns2d_fno_1e-3", "ns2d_fno_1e-4", "swe_pdb", "dr_pdb"]
HELD_OUT = "ns2d_fno_1e-5"


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    """The small suite, made by our solvers and sharded, for the training tests."""
    root = tmp_path_factory.mktemp("suite")
    written = generate_suite(
        "small",
        root / "raw",
        Size(trajectories=16, resolution=32, frames=12),
        seed=0,
        only=PRETRAIN_SETS + [HELD_OUT],
        progress=False,
    )
    for e in written:
        shard_dataset(e.name, e.path, root / "shards", fmt=e.format, per_shard=2, test=e.test, progress=False)
    return root / "shards"


def run_args(shards: Path, out: Path, *extra: str, sets: list[str] = PRETRAIN_SETS) -> list[str]:
    names = ", ".join(f"{{name: {s}}}" for s in sets)
    return [
        "--ds_config",
        "ds_configs/cpu_fp32.json",
        "--config",
        "configs/tiny_cpu.yaml",
        "--set",
        f"data.root={shards}",
        "--set",
        f"data.datasets=[{names}]",
        "--set",
        f"train.output_dir={out}",
        "--set",
        "train.log_every=1",
        *extra,
    ]


def short_run(*sets: tuple[str, object], mode: str = "pretrain") -> list[str]:
    """Arguments of an 8-step tiny run checkpointing at step 4, evaluated at its end, with ``sets`` overrides."""
    common = [
        ("train.steps", 8),
        ("train.checkpoint_every", 4),
        ("train.eval_every", 100),
        ("train.log_every", 1),
        ("train.micro_batch_per_rank", 2),
    ]
    flat = [a for key, value in [*sets, *common] for a in ("--set", f"{key}={value}")]
    return ["--ds_config", "ds_configs/cpu_fp32.json", "--config", "configs/tiny_cpu.yaml", "--mode", mode, *flat]


def run_killed_and_resumed(args_of: Callable[[Path], list[str]], tmp_path: Path) -> tuple[Path, str]:
    """Run on 2 ranks straight through, and again killed after its first checkpoint and resumed: the resumed
    steps' losses must equal the straight run's. Returns the straight run's folder and its log."""
    import json

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = launch("torchrun", 2, args_of(straight))
    launch_and_kill_after_checkpoint(2, args_of(killed), killed)
    resumed_from = int((killed / "checkpoints" / "latest").read_text().strip().removeprefix("step"))
    launch("torchrun", 2, args_of(killed))

    def history(out: Path) -> dict[int, float]:
        return {h["step"]: h["train/loss"] for h in json.loads((out / "eval" / "history.json").read_text())}

    a, b = history(straight), history(killed)
    assert sorted(b) == list(range(resumed_from + 1, max(a) + 1))
    assert all(b[s] == a[s] for s in b), (a, b)
    return straight, done.stdout + done.stderr


def env() -> dict[str, str]:
    """The environment of every run these tests start (see ``multiproc.cpu_env``)."""
    from multiproc import cpu_env

    return cpu_env()


def launch(launcher: str, nproc: int, args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    from multiproc import free_port, torchrun_cmd

    script = str(REPO / "launch" / "train.py")
    if launcher == "deepspeed":
        cmd = [
            sys.executable,
            "-m",
            "deepspeed.launcher.runner",
            "--num_gpus",
            str(nproc),
            "--master_port",
            str(free_port()),
            script,
            *args,
        ]
    elif launcher == "torchrun":
        cmd = torchrun_cmd(script, nproc, *args)
    else:
        cmd = [sys.executable, script, *args]
    out = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}\n--- stdout\n{out.stdout[-4000:]}\n--- stderr\n{out.stderr[-6000:]}")
    return out


def launch_and_kill_after_checkpoint(nproc: int, args: list[str], out: Path, timeout: float = 300) -> None:
    """Start a run and SIGKILL the whole process group once a checkpoint is complete."""
    from multiproc import torchrun_cmd

    cmd = torchrun_cmd(REPO / "launch" / "train.py", nproc, *args)
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + timeout
    try:
        while not latest.is_file():
            if proc.poll() is not None:
                raise AssertionError(f"run ended (rc {proc.returncode}) before writing a checkpoint")
            if time.time() > deadline:
                raise AssertionError("no checkpoint in time")
            time.sleep(0.05)
    finally:
        from multiproc import kill_tree

        kill_tree(proc)
