"""Small data sets from our own solvers, written in the original layouts the readers accept.

``nestor-ds data generate --suite small`` makes a suite a 2-core machine writes in a
few minutes; ``nestor-ds data shard`` then turns each into WebDataset shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from nestor_ds.data import formats as F
from nestor_ds.data import solvers as S
from nestor_ds.data.shards import DataError
from nestor_ds.data.suite_index import SuiteEntry, write_suite_index


@dataclass(frozen=True)
class Size:
    """How much a generated data set holds: trajectories, grid edge, frames."""

    trajectories: int = 10
    resolution: int = 32
    frames: int = 12


@dataclass(frozen=True)
class Job:
    """One data set of a suite: its registry name, source format, writer and test split."""

    name: str  # registry name
    fmt: str
    write: Callable[[Path, Size, np.random.Generator], Path]  # returns the source path to shard
    test: float | None = None  # split override for a small single-file set (the published tail needs the real size)


SMALL_TEST_SHARE = 0.25


def _ns(nu: float, version: Literal["5", "7.3"]) -> Callable[[Path, Size, np.random.Generator], Path]:
    def write(root: Path, size: Size, rng: np.random.Generator) -> Path:
        frames = [
            S.simulate_ns_vorticity(size.resolution, nu, float(size.frames), size.frames, rng, dt=1e-2)
            for _ in range(size.trajectories)
        ]
        u = np.stack(frames).transpose(0, 2, 3, 1)  # [N, X, Y, T] as FNO stores it
        return F.write_fno_mat(
            root / f"ns_V{nu:.0e}_N{size.trajectories}_T{size.frames}.mat",
            u.astype(np.float32),
            t=np.arange(1, size.frames + 1, dtype=np.float64),
            version=version,
        )

    return write


def _cfd(mach: float, eta: float, zeta: float) -> Callable[[Path, Size, np.random.Generator], Path]:
    def write(root: Path, size: Size, rng: np.random.Generator) -> Path:
        runs = np.stack(
            [
                S.simulate_compressible_ns(size.resolution, mach, eta, zeta, 0.5, size.frames, rng)
                for _ in range(size.trajectories)
            ]
        )  # [N, T, X, Y, 4]: density, pressure, Vx, Vy
        fields = [runs[..., c].astype(np.float32) for c in range(4)]
        name = f"2D_CFD_Rand_M{mach}_Eta{eta}_Zeta{zeta}_periodic_{size.resolution}_Train.hdf5"
        return F.write_pdebench_cfd(
            root / name,
            fields[0],
            fields[1],
            fields[2],
            fields[3],
            t=np.linspace(0, 0.5, size.frames + 1),
            mach=mach,
            eta=eta,
            zeta=zeta,
        )

    return write


def _cfd3d(mach: float) -> Callable[[Path, Size, np.random.Generator], Path]:
    """PDEBench's 3-D CFD layout from our 3-D solver (eta = zeta = 1e-8 in PDEBench's 3-D sets: inviscid here)."""

    def write(root: Path, size: Size, rng: np.random.Generator) -> Path:
        runs = np.stack(
            [
                S.simulate_compressible_ns3d(size.resolution, mach, 1.0, size.frames, rng)
                for _ in range(size.trajectories)
            ]
        )  # [N, T, X, Y, Z, 5]: density, pressure, Vx, Vy, Vz
        density, pressure, vx, vy, vz = (runs[..., c].astype(np.float32) for c in range(5))
        return F.write_pdebench_cfd3d(
            root / f"3D_CFD_Rand_M{mach}_Eta1e-08_Zeta1e-08_periodic_Train.hdf5",
            density,
            pressure,
            vx,
            vy,
            vz,
            t=np.linspace(0, 1.0, size.frames + 1),
            mach=mach,
            eta=1e-8,
            zeta=1e-8,
        )

    return write


def _dr(root: Path, size: Size, rng: np.random.Generator) -> Path:
    runs = (
        S.simulate_diffusion_reaction(size.resolution, 2.0, size.frames, rng).astype(np.float32)
        for _ in range(size.trajectories)
    )
    return F.write_pdebench_grouped(
        root / "2D_diff-react_NA_NA.h5", runs, t=np.linspace(0, 2.0, size.frames), compression="lzf"
    )  # as PDEBench's diffusion-reaction writer


def _swe(root: Path, size: Size, rng: np.random.Generator) -> Path:
    runs = (
        S.simulate_shallow_water(size.resolution, 1.0, size.frames, rng).astype(np.float32)
        for _ in range(size.trajectories)
    )
    return F.write_pdebench_grouped(root / "2D_rdb_NA_NA.h5", runs, t=np.linspace(0, 1.0, size.frames))


WELL_PER_FILE = 2  # trajectories per Well file (the real sets hold 2 to 100)


def _well_swe(root: Path, size: Size, rng: np.random.Generator) -> Path:
    """The Well's layout (``data/{train,valid,test}/*.hdf5``) filled by the shallow-water solver on a 1 x 2 basin
    with reflective walls all round: height (order 0), velocity (order 1), gravity (a scalar), WALL on x and y."""
    nx, ny = size.resolution, 2 * size.resolution
    n_test, n_valid = max(1, size.trajectories // 5), max(1, size.trajectories // 10)
    n_train = size.trajectories - n_test - n_valid
    if n_train < 1:
        raise DataError(
            f"the Well stand-in needs at least 3 trajectories (train, valid, test), got {size.trajectories}"
        )
    dx = (S.shallow_water.DOMAIN[1] - S.shallow_water.DOMAIN[0]) / nx
    coords = {"x": (np.arange(nx) + 0.5) * dx - 2.5, "y": (np.arange(ny) + 0.5 - ny / 2) * dx}
    time = np.linspace(0, 2.0, size.frames)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        for k in range(0, n, WELL_PER_FILE):
            runs = np.stack(
                [
                    S.shallow_water.run_shallow_water((nx, ny), 2.0, size.frames, rng).state
                    for _ in range(min(WELL_PER_FILE, n - k))
                ]
            )  # [N, T, X, Y, 3]: h, hu, hv
            h = runs[..., 0]
            F.write_well(
                root / "data" / split / f"swe_basin_well_{k // WELL_PER_FILE:02d}.hdf5",
                "swe_basin_well",
                coords,
                time,
                {"height": h, "velocity": runs[..., 1:] / h[..., None]},
                scalars={"gravity": S.shallow_water.GRAVITY},
                walls=("x", "y"),
            )
    return root


def _smoke(root: Path, size: Size, rng: np.random.Generator) -> Path:
    """PDEArena's layout: one float64 file per split, named as its generator names them, buoyancy 0.5."""
    folder = root / "NavierStokes-2D"
    n_test = max(1, size.trajectories // 4)
    n_valid = max(1, size.trajectories // 8)
    for split, n, seed in (
        ("train", size.trajectories - n_test - n_valid, 1),
        ("valid", n_valid, 2),
        ("test", n_test, 3),
    ):
        runs = np.stack([S.simulate_smoke(size.resolution, 0.5, 2.0, size.frames, rng) for _ in range(n)])
        folder.mkdir(parents=True, exist_ok=True)
        F.write_pdearena_ns(
            folder / F.pdearena_file_name(split, seed, 0.5, n),
            split,
            runs[..., 0],
            runs[..., 1],
            runs[..., 2],
            buo_y=0.5,
            t=np.linspace(0, 2.0, size.frames),
        )
    return folder


CFDBENCH_FRAMES = 40  # two of DPOT's 20-frame segments per case


def _cfdbench(root: Path, size: Size, rng: np.random.Generator) -> Path:
    """CFDBench's release tree without a mask file: cavity cases, and cylinder cases whose disc is the one
    CFDBench's loader derives from case.json (our stand-in flow is the lid-driven cavity around that disc)."""
    folder = root / "cfdbench"
    n, frames = size.resolution, CFDBENCH_FRAMES
    for k in range(size.trajectories):
        lid, nu = float(rng.uniform(0.5, 2.0)), float(rng.uniform(0.005, 0.02))
        props = {"density": 1.0, "viscosity": nu, "height": 1.0, "width": 1.0}
        if k % 2 == 0:
            out, _ = S.simulate_cavity(n, lid, nu, 2.0, frames, rng)
            F.write_cfdbench_case(
                folder / "cavity" / "prop" / f"case{k // 2:04d}", out[..., 0], out[..., 1], {"vel_top": lid, **props}
            )
        else:
            case = {
                "vel_in": lid,
                "density": 1.0,
                "viscosity": nu,
                "radius": float(rng.uniform(0.1, 0.2)),
                "x_min": 0.0,
                "x_max": 1.0,
                "y_min": 0.0,
                "y_max": 1.0,
            }
            blank = np.zeros((1, n, n), dtype=np.float32)
            fluid = F.case_features(blank, blank, case, "cylinder")[0, 1:-1, 1:, 2]  # CFDBench's disc, unpadded
            out, _ = S.simulate_cavity(n, lid, nu, 2.0, frames, rng, obstacle=fluid)
            F.write_cfdbench_case(folder / "cylinder" / "prop" / f"case{k // 2:04d}", out[..., 0], out[..., 1], case)
    return folder


WAVE_SECONDS = {"layer": 0.15, "gauss": 0.2}  # final times: pulses travel about half the square


def _wave(kind: str, frames: int) -> Callable[[Path, Size, np.random.Generator], Path]:
    """Poseidon's merged Wave file (``solution``, ``c``) filled by the acoustic solver; the published frame count
    (Wave-Layer 21, Wave-Gauss 16) whatever ``size.frames`` says."""

    def write(root: Path, size: Size, rng: np.random.Generator) -> Path:
        runs = [
            S.simulate_wave_set(size.resolution, kind, WAVE_SECONDS[kind], frames, rng)
            for _ in range(size.trajectories)
        ]
        u = np.stack([r[0] for r in runs])
        c = np.stack([r[1] for r in runs])
        return F.write_poseidon_wave(root / f"Wave-{kind.capitalize()}.nc", u, c)

    return write


ERA5_YEARS = range(2013, 2019)  # WeatherBench's split: 2013-2015 train, 2016 valid, 2017-2018 test
G0, H0, R_D = 9.80665, 5500.0, 287.05  # gravity, a 500 hPa height (m), the dry-air gas constant


def _era5(root: Path, size: Size, rng: np.random.Generator) -> Path:
    """WeatherBench's folders at 5.625 deg (32 x 64: latitude x longitude) filled by shallow water on a periodic
    rectangle: z500 = g H0 h, t850 the layer-mean temperature the hypsometric equation gives for that thickness
    (g H0 h / (R_d ln 2)), u10 and v10 the velocity in m/s; hourly records, a stand-in year holding
    ``ceil(trajectories / 6)`` windows of 16 six-hourly frames, recorded after a window's worth of spin-up from
    rest (so no window starts with the wind at exactly zero)."""
    from nestor_ds.data.formats import weatherbench as wb

    n_lat, n_lon = size.resolution, 2 * size.resolution
    windows = -(-size.trajectories // len(ERA5_YEARS))
    records = windows * wb.WINDOW * wb.STRIDE
    lat = -90 + (np.arange(n_lat) + 0.5) * 180 / n_lat
    lon = np.arange(n_lon) * 360 / n_lon
    x, y = np.meshgrid(np.arange(n_lat) / n_lat, np.arange(n_lon) / n_lon, indexing="ij")
    for year in ERA5_YEARS:
        h0 = np.ones((n_lat, n_lon))
        for _ in range(4):
            kx, ky = rng.integers(1, 3), rng.integers(1, 4)
            h0 += 0.08 * rng.uniform(0.3, 1.0) * np.cos(2 * np.pi * (kx * x + ky * y) + rng.uniform(0, 2 * np.pi))
        spin = wb.WINDOW * wb.STRIDE  # a window's worth of spin-up, dropped: no year starts at rest
        run = S.shallow_water.run_shallow_water(
            (n_lat, n_lon), (spin + records) * 0.015, spin + records, rng, boundary="periodic", h0=h0
        ).state[spin:]  # [records, lat, lon, 3]
        h, u, v = run[..., 0], run[..., 1] / run[..., 0], run[..., 2] / run[..., 0]
        fields = {"z500": G0 * H0 * h, "t850": G0 * H0 * h / (R_D * np.log(2.0)), "u10": 10 * u, "v10": 10 * v}
        wb.write_weatherbench(root, year, fields, lat, lon)
    return root


SUITES: dict[str, list[Job]] = {
    "small": [
        Job("ns2d_fno_1e-3", "fno_mat", _ns(1e-3, "5"), SMALL_TEST_SHARE),
        Job("ns2d_fno_1e-4", "fno_mat", _ns(1e-4, "7.3"), SMALL_TEST_SHARE),
        Job("ns2d_fno_1e-5", "fno_mat", _ns(1e-5, "7.3"), SMALL_TEST_SHARE),
        Job("dr_pdb", "pdebench_grouped", _dr, SMALL_TEST_SHARE),
        Job("swe_pdb", "pdebench_grouped", _swe, SMALL_TEST_SHARE),
        Job("ns2d_pdb_M1_eta1e-1_zeta1e-1", "pdebench_cfd", _cfd(1.0, 0.1, 0.1), SMALL_TEST_SHARE),
        Job("ns2d_pdb_M1e-1_eta1e-2_zeta1e-2", "pdebench_cfd", _cfd(0.1, 0.01, 0.01), SMALL_TEST_SHARE),
        Job("ns2d_pda", "pdearena_ns", _smoke),
        Job("cfdbench", "cfdbench", _cfdbench),
    ],
    "small3d": [Job("ns3d_pdb_M1_rand", "pdebench_cfd3d", _cfd3d(1.0), SMALL_TEST_SHARE)],
    "well": [Job("swe_basin_well", "the_well", _well_swe)],
    "downstream": [
        Job("wave_gauss", "poseidon_wave", _wave("gauss", 16), SMALL_TEST_SHARE),
        Job("wave_layer", "poseidon_wave", _wave("layer", 21), SMALL_TEST_SHARE),
        Job("era5", "weatherbench", _era5),
    ],
}


def generate_suite(
    suite: str,
    out: str | Path,
    size: Size = Size(),
    seed: int = 0,
    only: list[str] | None = None,
    progress: bool = True,
) -> list[SuiteEntry]:
    """Write each data set of the suite under ``out/<name>/`` and the index ``out/sources.json`` that
    ``data shard --from-suite`` reads; returns the index's entries (name, format, source path, test split).

    The test split is None where the layout carries its own (PDEArena files, CFDBench
    cases), else the share of trailing trajectories to test (the published tails of
    200 need the real file sizes).
    """
    if suite not in SUITES:
        raise DataError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    jobs = [j for j in SUITES[suite] if only is None or j.name in only]
    unknown = set(only or []) - {j.name for j in SUITES[suite]}
    if unknown:
        raise DataError(f"suite {suite!r} has no data set {sorted(unknown)}")
    written: list[SuiteEntry] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(jobs, desc="generate", unit="set")
    for i, job in enumerate(jobs):
        if bar is not None:
            bar.set_postfix_str(job.name)
        folder = Path(out) / job.name
        folder.mkdir(parents=True, exist_ok=True)
        path = job.write(folder, size, np.random.default_rng([seed, i]))
        written.append(SuiteEntry(job.name, job.fmt, str(path), job.test))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    write_suite_index(out, written)
    return written
