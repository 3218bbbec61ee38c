"""PDEBench diffusion-reaction and shallow-water HDF5 files: one group per trajectory.

Groups ``'0000'``, ``'0001'``, ... each hold ``data [T, X, Y, C]`` and
``grid/x``, ``grid/y``, ``grid/t``. Reading one group is reading one trajectory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np

from nestor_ds.data.shards import DataError

from ..trajectory import Trajectory
from ._common import (
    PathLike,
    cell_centres,
    open_h5,
    require,
    require_dataset,
    select,
    step,
)

LAYOUT = "pdebench_grouped"
DEFAULT_CHANNELS = {1: ["h"], 2: ["u", "v"]}  # SWE (water height), DR (activator, inhibitor)


def write_pdebench_grouped(
    path: PathLike,
    trajectories: Iterable[np.ndarray],
    t: np.ndarray | None = None,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    compression: str | None = None,
    order: Sequence[int] | None = None,
) -> Path:
    """Write ``[T, X, Y, C]`` arrays as groups ``'0000'``, ``'0001'``, ... of a PDEBench file.

    Takes any iterable so a generator can write trajectories as it makes them.
    Grid defaults: ``t`` on [0, 1] with T points, ``x``/``y`` cell centres on [0, 1].
    ``compression`` ("lzf" as PDEBench's diffusion-reaction writer, "gzip") applies to
    every array; ``order`` gives the group number of each trajectory, so groups can be
    created out of numeric order as PDEBench's parallel workers create them.
    """
    path = Path(path)
    opts = {"compression": compression} if compression else {}
    with h5py.File(path, "w") as f:
        for pos, arr in enumerate(trajectories):
            k = order[pos] if order is not None else pos
            arr = np.asarray(arr, dtype=np.float32)
            if arr.ndim != 4:
                raise DataError(f"{path}: trajectory {k} must be [T, X, Y, C], got shape {arr.shape}")
            frames, nx, ny, _ = arr.shape
            g = f.create_group(f"{k:04d}")
            g.create_dataset("data", data=arr, **opts)
            grid = g.create_group("grid")
            tt = np.linspace(0.0, 1.0, frames) if t is None else np.asarray(t)
            grid.create_dataset("t", data=tt.astype(np.float32), **opts)
            grid.create_dataset("x", data=(cell_centres(nx) if x is None else np.asarray(x)).astype(np.float32), **opts)
            grid.create_dataset("y", data=(cell_centres(ny) if y is None else np.asarray(y)).astype(np.float32), **opts)
    return path


def _names(f: h5py.File) -> list[str]:
    """Trajectory groups by name: DPOT reads ``'{i:04d}'`` for i = 0, 1, ..., whatever order they were created in."""
    return sorted(k for k in f.keys() if isinstance(f[k], h5py.Group))


def count_pdebench_grouped(path: PathLike) -> int:
    """Trajectories (groups) in a PDEBench grouped file."""
    with open_h5(path, LAYOUT) as f:
        return len(_names(f))


def read_pdebench_grouped(
    path: PathLike,
    dataset: str,
    split: str | None = None,
    indices: Sequence[int] | range | None = None,
    channels: Sequence[str] | None = None,
) -> Iterator[Trajectory]:
    """Yield one ``[T, X, Y, C]`` trajectory per group, in sorted group-name order.

    ``indices`` are positions in that order. ``channels`` defaults by C: 1 -> ["h"]
    (shallow water), 2 -> ["u", "v"] (diffusion-reaction). The first chosen group
    is checked when this is called; each group is checked as it is read. ``split``
    must be None: the file holds one pool, split it with ``indices``.
    """
    path = Path(path)
    if split is not None:
        raise DataError(f"{path}: the {LAYOUT} layout keeps no splits inside the file; select with indices")
    with open_h5(path, LAYOUT) as f:
        names = _names(f)
        if not names:
            raise DataError(f"{path}: no trajectory groups ('0000', ...) found, not the {LAYOUT} layout")
        chosen = select(indices, len(names), path)
        n_ch = _check_group(f, names[chosen[0]] if chosen else names[0], path).shape[-1]
    if channels is None:
        if n_ch not in DEFAULT_CHANNELS:
            raise DataError(f"{path}: {n_ch} channels in 'data' and no default names; pass channels=")
        names_ch = list(DEFAULT_CHANNELS[n_ch])
    else:
        names_ch = list(channels)
        if len(names_ch) != n_ch:
            raise DataError(f"{path}: {n_ch} channels in 'data' but {len(names_ch)} names given: {names_ch}")
    return _stream(path, dataset, [(i, names[i]) for i in chosen], names_ch)


def _check_group(f: h5py.File, name: str, path: Path) -> h5py.Dataset:
    g = require(f, name, path, LAYOUT)
    data = require_dataset(g, "data", path, LAYOUT, ndim=4)
    grid = require(g, "grid", path, LAYOUT)
    for key in ("x", "y", "t"):
        require_dataset(grid, key, path, LAYOUT)
    return data


def _stream(path: Path, dataset: str, chosen: list[tuple[int, str]], channels: list[str]) -> Iterator[Trajectory]:
    with h5py.File(path, "r") as f:
        for i, name in chosen:
            ds = _check_group(f, name, path)
            if ds.shape[-1] != len(channels):
                raise DataError(f"{path}: key '{name}/data' has {ds.shape[-1]} channels, expected {len(channels)}")
            grid = f[name]["grid"]
            frames, nx, ny, _ = ds.shape
            dt = step(grid["t"][()], 1.0)
            dx, dy = step(grid["x"][()], 1.0 / nx), step(grid["y"][()], 1.0 / ny)
            yield Trajectory(dataset, i, ds[()], list(channels), dt, dx, dy)
