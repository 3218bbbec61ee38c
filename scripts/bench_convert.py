"""Conversion speed on an FNO v7.3 file: block reads vs the per-trajectory strided read, same run.

    .venv/bin/python scripts/bench_convert.py [--trajectories 1000] [--frames 10] [--resolution 64]

Writes a MATLAB v7.3 file of N trajectories (N is the fastest HDF5 axis, as in the
real ns_V1e-4 file), then prints trajectories/s of:
- block: the reader as ``data shard`` uses it (consecutive trajectories per HDF5 read);
- per-trajectory: one strided column ``u[..., i]`` per trajectory (the old reader),
  timed on the first ``--baseline`` trajectories;
- the whole ``data shard`` (read, encode, hash, write) with 1 and ``--workers`` processes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from nestor_ds.data.convert import shard_dataset
from nestor_ds.data.formats.fno_mat import read_fno_mat, read_fno_mat_per_trajectory, write_fno_mat


def rate(count: int, seconds: float) -> float:
    return count / max(seconds, 1e-9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trajectories", type=int, default=1000)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--baseline", type=int, default=100, help="trajectories timed with the per-trajectory read")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    n, r, t = args.trajectories, args.resolution, args.frames
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"ns_V1e-4_N{n}_T{t}.mat"
        u = np.random.default_rng(0).standard_normal((n, r, r, t), dtype=np.float32)
        write_fno_mat(path, u, version="7.3")
        del u
        print(f"file: {n} trajectories of {r}x{r}x{t}, {path.stat().st_size / 2**20:.0f} MiB (MATLAB v7.3)")

        start = time.perf_counter()
        count = sum(1 for _ in read_fno_mat(path, "bench"))
        block = rate(count, time.perf_counter() - start)

        start = time.perf_counter()
        stream = read_fno_mat_per_trajectory(path, "bench")
        base_n = min(args.baseline, n)
        for _ in range(base_n):
            next(stream)
        per_traj = rate(base_n, time.perf_counter() - start)
        stream.close()

        print(f"{'read':<28} {'traj/s':>10}")
        print(f"{'per-trajectory (old)':<28} {per_traj:>10.1f}")
        print(f"{'block (data shard)':<28} {block:>10.1f}")
        print(f"speed-up block / per-trajectory: {block / per_traj:.1f}x")

        for workers in sorted({1, args.workers}):
            start = time.perf_counter()
            shard_dataset(
                "ns2d_fno_1e-4",
                path,
                Path(tmp) / f"shards{workers}",
                shard_bytes=64 * 2**20,
                workers=workers,
                test=0.1,
                progress=False,
            )
            print(f"data shard, {workers} worker(s): {rate(n, time.perf_counter() - start):.1f} traj/s end to end")


if __name__ == "__main__":
    main()
