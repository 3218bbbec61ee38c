"""Throughput of the real training job: ``deepspeed launch/train.py`` for N steps on shard tars.

Each model runs as users run it (DeepSpeed launcher, loader workers, MLflow, checkpoint at the end);
the figures are read from the run's own history: samples/s of the last logging interval (the first
holds start-up and compilation), peak memory, and the device reads of a whole step
(``train.count_host_syncs``). The data are random fields at the model's resolution written by our
shard writer: the throughput of a step does not depend on what the fields hold.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from nestor_ds.data.shards import write_shards
from nestor_ds.data.trajectory import Trajectory

REPO = Path(__file__).resolve().parents[2]
BENCH_SETS = {"bench_a": 2, "bench_b": 3, "bench_c": 4}  # name -> channels
FRAMES = 24


def write_bench_shards(root: Path, resolution: int, trajectories: int = 16, seed: int = 0) -> dict[str, dict]:
    """Random-field shards of three data sets (2, 3, 4 channels); returns their ``data.custom`` entries."""
    rng = np.random.default_rng(seed)
    custom = {}
    for name, channels in BENCH_SETS.items():
        for split, n in (("train", trajectories), ("test", 2)):
            trajs = (
                Trajectory(
                    name,
                    i,
                    rng.standard_normal((FRAMES, resolution, resolution, channels)).astype(np.float32),
                    [f"c{k}" for k in range(channels)],
                    0.1,
                    1.0,
                    1.0,
                )
                for i in range(n)
            )
            write_shards(trajs, root / name, name, split, per_shard=4)
        custom[name] = {
            "format": "shards",
            "resolution": resolution,
            "channels": channels,
            "frames": FRAMES,
            "train": trajectories,
            "test": 2,
            "weight": 1.0,
        }
    return custom


@dataclass
class TrainBench:
    """One benchmarked training run: throughput per rank, peak memory, host syncs."""

    name: str
    samples_per_s: float  # per GPU (or CPU rank)
    peak_mem_mib: float
    host_syncs: float  # device reads in a whole training step
    wall_s: float
    alltoall_share: float = 0.0  # share of rank 0's time blocked in expert all-to-alls (ep_size > 1)


def run_training(
    name: str,
    config: Path,
    overrides: dict,
    ds_config: Path,
    shards: Path,
    custom: dict,
    out: Path,
    nproc: int,
    steps: int,
    batch: int,
    resolution: int,
    device: str,
) -> TrainBench:
    """One real training run; its history gives the figures."""
    import time

    raw = yaml.safe_load(config.read_text())
    experts = raw["model"].get("moe", {}).get("experts", 1)
    raw["model"].pop("grid", None)
    raw["model"].update(resolution=resolution, **overrides.get("model", {}))
    raw["data"] = {
        **raw.get("data", {}),
        "root": str(shards),
        "custom": custom,
        "datasets": [{"name": n} for n in custom],
        **overrides.get("data", {}),
    }
    raw["train"] = {
        **raw.get("train", {}),
        "steps": steps,
        "micro_batch_per_rank": batch,
        "log_every": max(1, steps // 2),
        "eval_every": 10 * steps,
        "checkpoint_every": 10 * steps,
        "eval_trajectories": 1,  # the final evaluation is not what is measured
        "count_host_syncs": True,
        "output_dir": str(out),
    }
    raw["train"].pop("epochs", None)
    raw["parallel"] = {"ep_size": math.gcd(nproc, experts), **overrides.get("parallel", {})}
    raw["tracking"] = {"experiment": "bench-train", "run_name": name}
    cfg_path = out.with_suffix(".yaml")
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(raw))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    if device == "cpu":
        env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    cmd = [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus",
        str(nproc),
        str(REPO / "launch" / "train.py"),
        "--ds_config",
        str(ds_config),
        "--config",
        str(cfg_path),
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{name}: training run failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    history = json.loads((out / "eval" / "history.json").read_text())
    last = history[-1]
    return TrainBench(
        name,
        last["perf/samples_per_s"] / nproc,
        last["perf/peak_mem_mib"],
        last["perf/host_syncs"],
        time.perf_counter() - start,
        last.get("perf/alltoall_share", 0.0),
    )
