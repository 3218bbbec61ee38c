"""Small data sets from our own solvers, written in the original layouts the readers accept.

``nestor-ds data generate --suite small`` makes a suite a 2-core machine writes in a
few minutes; ``nestor-ds data shard`` then turns each into WebDataset shards.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from nestor_ds.data import formats as F
from nestor_ds.data import solvers as S


@dataclass(frozen=True)
class Size:
    trajectories: int = 10
    resolution: int = 32
    frames: int = 12


@dataclass(frozen=True)
class Job:
    name: str  # registry name
    fmt: str
    write: Callable[[Path, Size, np.random.Generator], Path]  # returns the source path to shard


def _ns(nu: float, version: str) -> Callable[[Path, Size, np.random.Generator], Path]:
    def write(root: Path, size: Size, rng: np.random.Generator) -> Path:
        frames = [S.simulate_ns_vorticity(size.resolution, nu, float(size.frames), size.frames, rng, dt=1e-2)
                  for _ in range(size.trajectories)]
        u = np.stack(frames).transpose(0, 2, 3, 1)  # [N, X, Y, T] as FNO stores it
        return F.write_fno_mat(root / f"ns_V{nu:.0e}_N{size.trajectories}_T{size.frames}.mat", u.astype(np.float32),
                               t=np.arange(1, size.frames + 1, dtype=np.float64), version=version)
    return write


def _cfd(mach: float, eta: float, zeta: float) -> Callable[[Path, Size, np.random.Generator], Path]:
    def write(root: Path, size: Size, rng: np.random.Generator) -> Path:
        runs = np.stack([S.simulate_compressible_ns(size.resolution, mach, eta, zeta, 0.5, size.frames, rng)
                         for _ in range(size.trajectories)])  # [N, T, X, Y, 4]: density, pressure, Vx, Vy
        fields = [runs[..., c].astype(np.float32) for c in range(4)]
        name = f"2D_CFD_Rand_M{mach}_Eta{eta}_Zeta{zeta}_periodic_{size.resolution}_Train.hdf5"
        return F.write_pdebench_cfd(root / name, *fields, t=np.linspace(0, 0.5, size.frames + 1))
    return write


def _dr(root: Path, size: Size, rng: np.random.Generator) -> Path:
    runs = (S.simulate_diffusion_reaction(size.resolution, 2.0, size.frames, rng).astype(np.float32)
            for _ in range(size.trajectories))
    return F.write_pdebench_grouped(root / "2D_diff-react_NA_NA.h5", runs, t=np.linspace(0, 2.0, size.frames))


def _swe(root: Path, size: Size, rng: np.random.Generator) -> Path:
    runs = (S.simulate_shallow_water(size.resolution, 1.0, size.frames, rng).astype(np.float32)
            for _ in range(size.trajectories))
    return F.write_pdebench_grouped(root / "2D_rdb_NA_NA.h5", runs, t=np.linspace(0, 1.0, size.frames))


def _smoke(root: Path, size: Size, rng: np.random.Generator) -> Path:
    path = root / "NavierStokes2D_smoke.h5"
    n_test = max(1, size.trajectories // 5)
    for split, n in (("train", size.trajectories - n_test), ("test", n_test)):
        buoyancy = rng.uniform(0.2, 0.5, n)
        runs = np.stack([S.simulate_smoke(size.resolution, float(b), 2.0, size.frames, rng) for b in buoyancy])
        F.write_pdearena_ns(path, split, *(runs[..., c].astype(np.float32) for c in range(3)), buo_y=buoyancy,
                            t=np.linspace(0, 2.0, size.frames))
    return path


def _cavity(root: Path, size: Size, rng: np.random.Generator) -> Path:
    folder = root / "cavity"
    for k in range(size.trajectories):
        lid, nu = float(rng.uniform(0.5, 2.0)), float(rng.uniform(0.005, 0.02))
        frames, mask = S.simulate_cavity(size.resolution, lid, nu, 2.0, size.frames, rng, obstacle=k % 2 == 1)
        F.write_cfdbench_case(folder / f"case{k:04d}", frames[..., 0], frames[..., 1],
                              {"lid_velocity": lid, "viscosity": nu, "density": 1.0, "height": 1.0, "width": 1.0,
                               "dt": 2.0 / size.frames}, mask=mask)
    return folder


SUITES: dict[str, list[Job]] = {
    "small": [
        Job("ns2d_fno_1e-3", "fno_mat", _ns(1e-3, "5")),
        Job("ns2d_fno_1e-4", "fno_mat", _ns(1e-4, "7.3")),
        Job("ns2d_fno_1e-5", "fno_mat", _ns(1e-5, "7.3")),
        Job("dr_pdb", "pdebench_grouped", _dr),
        Job("swe_pdb", "pdebench_grouped", _swe),
        Job("ns2d_pdb_M1_eta1e-1_zeta1e-1", "pdebench_cfd", _cfd(1.0, 0.1, 0.1)),
        Job("ns2d_pdb_M1e-1_eta1e-2_zeta1e-2", "pdebench_cfd", _cfd(0.1, 0.01, 0.01)),
        Job("ns2d_pda", "pdearena_ns", _smoke),
        Job("cfdbench", "cfdbench", _cavity),
    ],
}


def generate_suite(suite: str, out: str | Path, size: Size = Size(), seed: int = 0, only: list[str] | None = None,
                   progress: bool = True) -> dict[str, tuple[str, Path]]:
    """Write each data set of the suite under ``out/<name>/``; return {name: (format, source path)}."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    jobs = [j for j in SUITES[suite] if only is None or j.name in only]
    unknown = set(only or []) - {j.name for j in SUITES[suite]}
    if unknown:
        raise ValueError(f"suite {suite!r} has no data set {sorted(unknown)}")
    written: dict[str, tuple[str, Path]] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(jobs, desc="generate", unit="set")
    for i, job in enumerate(jobs):
        if bar is not None:
            bar.set_postfix_str(job.name)
        folder = Path(out) / job.name
        folder.mkdir(parents=True, exist_ok=True)
        written[job.name] = (job.fmt, job.write(folder, size, np.random.default_rng([seed, i])))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return written
