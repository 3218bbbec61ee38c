from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

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
