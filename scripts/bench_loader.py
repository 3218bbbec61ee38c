"""Samples/s per core of the shard loader against reading the same windows from per-trajectory HDF5 files.

Both paths produce the same training windows (t_in + t_out frames, resized to the
common grid, channels padded); the figures are measured in one run on this machine,
one thread, for the shard loader at several ``data.windows_per_trajectory``.
--step-rate S prints how many loader cores a GPU step of S samples/s needs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from nestor_ds.data.loader import MixedWindows, Source, to_window
from nestor_ds.data.shards import read_manifest, write_shards
from nestor_ds.data.trajectory import Trajectory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trajectories", type=int, default=64)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--native", type=int, default=64, help="native resolution of the stored data")
    ap.add_argument("--resolution", type=int, default=64, help="common resolution of the windows")
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--windows", type=int, nargs="+", default=[1, 4, 8], help="windows per decoded trajectory")
    ap.add_argument("--step-rate", type=float, default=None, help="samples/s of a measured training step")
    args = ap.parse_args()
    torch.set_num_threads(1)  # per core
    rng = np.random.default_rng(0)
    t_in, t_out = 10, 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trajs = [
            Trajectory(
                "bench",
                i,
                rng.standard_normal((args.frames, args.native, args.native, args.channels)).astype(np.float32),
                [f"c{c}" for c in range(args.channels)],
                0.1,
                1.0,
                1.0,
            )
            for i in range(args.trajectories)
        ]
        write_shards(trajs, root / "bench", "bench", "train", per_shard=8)
        h5_dir = root / "h5"
        h5_dir.mkdir()
        for t in trajs:
            with h5py.File(h5_dir / f"{t.index:06d}.h5", "w") as f:
                f["data"] = t.data
        size_mb = sum(p.stat().st_size for p in (root / "bench" / "train").glob("*.tar")) / 2**20

        manifest = read_manifest(root / "bench" / "train")
        source = Source("bench", 0, str(root / "bench" / "train"), manifest, 1.0, manifest["count"])
        shard_rates = {}
        for k in args.windows:
            stream = MixedWindows(
                [source],
                t_in=t_in,
                t_out=t_out,
                grid=[args.resolution] * 2,
                channels=4,
                batch_size=args.batch,
                seed=0,
                rank=0,
                world=1,
                workers=0,
                windows_per_trajectory=k,
            )
            it = iter(stream)
            start = time.perf_counter()
            for _ in range(args.samples // args.batch):
                next(it)
            shard_rates[k] = args.samples / (time.perf_counter() - start)

        files = sorted(h5_dir.glob("*.h5"))
        start = time.perf_counter()
        for b in range(args.samples // args.batch):
            windows = []
            for k in range(args.batch):
                i = (b * args.batch + k) % len(files)
                with h5py.File(files[i], "r") as f:
                    wrng = np.random.default_rng([b, k])
                    t0 = int(wrng.integers(0, args.frames - t_in - t_out + 1))
                    data = f["data"][t0 : t0 + t_in + t_out]  # reads only the window
                traj = Trajectory("bench", i, data, [f"c{c}" for c in range(args.channels)], 0.1, 1.0, 1.0)
                windows.append(to_window(traj, np.random.default_rng(0), t_in, t_out, [args.resolution] * 2, 4))
            torch.stack([w[0] for w in windows])
        h5_rate = args.samples / (time.perf_counter() - start)

    print(
        f"{args.trajectories} trajectories [{args.frames}, {args.native}, {args.native}, {args.channels}] "
        f"({size_mb:.0f} MiB), windows {t_in}+{t_out} frames at {args.resolution}^2, batch {args.batch}"
    )
    print(f"{'path (one core)':<40} {'samples/s':>10} {'vs HDF5':>8}")
    print(f"{'per-trajectory HDF5 files, window reads':<40} {h5_rate:>10.1f} {1.0:>8.2f}")
    for k, rate in shard_rates.items():
        print(f"{f'WebDataset shards, {k} windows/trajectory':<40} {rate:>10.1f} {rate / h5_rate:>8.2f}")
    if args.step_rate:
        for k, rate in shard_rates.items():
            print(
                f"{k} windows/trajectory: {args.step_rate / rate:.2f} loader cores feed {args.step_rate:.0f} samples/s"
            )


if __name__ == "__main__":
    main()
