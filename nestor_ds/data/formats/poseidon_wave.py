"""Poseidon's acoustic wave sets, Wave-Layer and Wave-Gauss (camlab-ethz/poseidon ``scOT/problems/wave/acoustic.py``).

They ship as netCDF pieces, ``solution_0.nc``, ``solution_1.nc``, ... (variable ``solution``,
``[sample, time, x, y]``, samples concatenated in piece order) and ``c_0.nc`` (variable ``c``, the wave speed,
``[sample, x, y]``); Poseidon's ``assemble_data.py`` merges them into one ``Wave-Layer.nc`` / ``Wave-Gauss.nc``
that its loader opens with h5py, reading ``solution`` and ``c``. This reader takes either: a merged file, or
a folder of pieces.

A trajectory is ``[T, X, Y, 2]`` with channels ``u`` (the displacement, predicted) and ``c`` (constant in time,
input only: Poseidon feeds it as an input channel and copies it into the label). The frame count is the file's
(21 for Wave-Layer, 16 for Wave-Gauss as released); ``dt`` is ``1 / (T - 1)``, Poseidon's lead time (``t /
constants["time"]``, the trajectory spanning [0, 1]), unless the file carries a ``time`` variable; the grid is
the unit square, ``dx = 1 / X``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from nestor_ds.data.shards import DataError

from ..trajectory import Trajectory
from ._common import PathLike, select, step
from .netcdf import NetcdfFile, open_netcdf

LAYOUT = "poseidon_wave"
CHANNELS = ["u", "c"]
_PIECE = re.compile(r"^solution_(\d+)\.nc$")


def _pieces(source: Path) -> tuple[list[Path], Path]:
    """The solution pieces in order and the wave-speed file of a folder, or the merged file twice."""
    if source.is_file():
        return [source], source
    if not source.is_dir():
        raise DataError(f"{source}: no such file or folder ({LAYOUT} layout expected)")
    numbered = sorted((int(m.group(1)), p) for p in source.iterdir() if (m := _PIECE.match(p.name)))
    if numbered:
        found = [n for n, _ in numbered]
        if found != list(range(len(found))):
            missing = sorted(set(range(max(found) + 1)) - set(found))
            raise DataError(f"{source}: solution pieces {found} found, solution_{missing[0]}.nc is missing")
        speed = source / "c_0.nc"
        if not speed.is_file():
            raise DataError(f"{source}: solution pieces found but no c_0.nc (the wave speed, {LAYOUT} layout)")
        return [p for _, p in numbered], speed
    merged = sorted(source.glob("*.nc"))
    if len(merged) == 1:
        return merged, merged[0]
    raise DataError(
        f"{source}: expected solution_0.nc, solution_1.nc, ... with c_0.nc, or one merged Wave-*.nc file "
        f"({LAYOUT} layout); found {[p.name for p in merged] or 'no .nc file'}"
    )


def _layout(source: Path) -> tuple[list[tuple[Path, int]], Path, tuple[int, ...], float]:
    """[(piece, samples)], the wave-speed file, the [T, X, Y] shape and dt, checked across pieces."""
    pieces, speed = _pieces(source)
    counts: list[tuple[Path, int]] = []
    shape: tuple[int, ...] = ()
    dt = 0.0
    for p in pieces:
        with open_netcdf(p, LAYOUT) as nc:
            sol = nc.var("solution", LAYOUT, ndim=4)
            if shape and tuple(sol.shape[1:]) != shape:
                raise DataError(f"{p}: solution is {tuple(sol.shape)}, {pieces[0].name} has [*, {shape}]")
            shape = tuple(sol.shape[1:])
            counts.append((p, int(sol.shape[0])))
            if not dt:
                dt = step(nc.read("time"), 0.0) if "time" in nc else 0.0
    frames = shape[0]
    if frames < 2:
        raise DataError(f"{pieces[0]}: solution holds {frames} frame; a trajectory needs at least 2")
    n = sum(k for _, k in counts)
    with open_netcdf(speed, LAYOUT) as nc:
        c = nc.var("c", LAYOUT, ndim=3)
        if tuple(c.shape) != (n, *shape[1:]):
            raise DataError(
                f"{speed}: c is {tuple(c.shape)}, expected [{n}, {shape[1]}, {shape[2]}] to match the solution's "
                f"{n} samples on a {shape[1]} x {shape[2]} grid"
            )
    return counts, speed, shape, dt or 1.0 / (frames - 1)


def count_poseidon_wave(source: PathLike) -> int:
    """Trajectories in a merged Wave file or a folder of pieces, from the shapes alone."""
    counts, _, _, _ = _layout(Path(source))
    return sum(k for _, k in counts)


def read_poseidon_wave(
    source: PathLike,
    dataset: str,
    split: str | None = None,
    indices: Sequence[int] | range | None = None,
) -> Iterator[Trajectory]:
    """Yield ``[T, X, Y, 2]`` trajectories (``u`` predicted, ``c`` input only), one sample read at a time.

    ``indices`` are positions over all samples (pieces in order); ``split`` must be None: the published split
    (:mod:`nestor_ds.data.splits`, rule ``poseidon``) is cut by position."""
    source = Path(source)
    if split is not None:
        raise DataError(f"{source}: the {LAYOUT} layout keeps no splits inside the files; select with indices")
    counts, speed, shape, dt = _layout(source)
    chosen = select(indices, sum(k for _, k in counts), source)
    return _stream(dataset, counts, speed, chosen, dt, shape)


def _stream(
    dataset: str, counts: list[tuple[Path, int]], speed: Path, chosen: list[int], dt: float, shape: tuple[int, ...]
) -> Iterator[Trajectory]:
    starts = np.cumsum([0] + [k for _, k in counts])
    frames, nx, ny = shape
    with ExitStack() as files:
        cf = files.enter_context(open_netcdf(speed, LAYOUT))
        opened: dict[Path, NetcdfFile] = {speed: cf}  # each piece opened once (the merged file: it is cf)
        for i in chosen:
            piece = int(np.searchsorted(starts, i, side="right")) - 1
            path = counts[piece][0]
            if path not in opened:
                opened[path] = files.enter_context(open_netcdf(path, LAYOUT))
            u = opened[path].read("solution", i - int(starts[piece]))  # [T, X, Y]
            c = np.broadcast_to(cf.read("c", i), (frames, nx, ny))
            data = np.stack([u, c], axis=-1)
            yield Trajectory(dataset, i, data, list(CHANNELS), dt, 1.0 / nx, 1.0 / ny, predicted=1)


def write_poseidon_wave(path: PathLike, u: np.ndarray, c: np.ndarray) -> Path:
    """Write Poseidon's merged file: ``solution [N, T, X, Y]`` and ``c [N, X, Y]`` (float32), as its loader reads."""
    import h5py

    path = Path(path)
    u, c = np.asarray(u, dtype=np.float32), np.asarray(c, dtype=np.float32)
    if u.ndim != 4 or c.shape != (u.shape[0], *u.shape[2:]):
        raise DataError(f"{path}: solution must be [N, T, X, Y] and c [N, X, Y], got {u.shape} and {c.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("solution", data=u)
        f.create_dataset("c", data=c)
    return path
