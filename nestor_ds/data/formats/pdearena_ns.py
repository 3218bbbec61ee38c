"""PDEArena Navier-Stokes 2D (smoke buoyancy) HDF5 files.

PDEArena (``pdedatagen/navier_stokes.py``) writes one file per (split, seed,
buoyancy), named ``NavierStokes2D_{split}_{seed}_{buoyancy:.5f}[_{N}].h5`` (the
sample count only on train files), each holding ONE group named after its split
with ``u``, ``vx``, ``vy`` ``[N, T, X, Y]`` float64 and per trajectory ``t[N, T]``,
``x[N, X]``, ``y[N, Y]``, ``dt``, ``dx``, ``dy``, ``buo_y`` ``[N]``. The reader also
accepts the grid arrays shared (no N axis) and files holding several split groups.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from itertools import chain
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

LAYOUT = "pdearena_ns"
FIELDS = ["u", "vx", "vy"]
CHANNELS = ["u", "vx", "vy"]
SPLITS = ("train", "valid", "test")


def pdearena_file_name(split: str, seed: int, buoyancy: float, samples: int) -> str:
    """The name PDEArena's generator gives a file (train files also carry the sample count)."""
    name = f"NavierStokes2D_{split}_{seed}_{buoyancy:.5f}"
    return f"{name}_{samples}.h5" if split == "train" else f"{name}.h5"


def write_pdearena_ns(
    path: PathLike,
    split: str,
    u: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    buo_y: float | np.ndarray = 0.5,
    t: np.ndarray | None = None,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
) -> Path:
    """Add split group ``split`` with three ``[N, T, X, Y]`` fields to ``path`` (created if absent).

    Everything is stored per trajectory and in float64, as PDEArena does: ``buo_y``
    (scalar or ``[N]``) becomes ``[N]``; ``t [T]``/``x [X]``/``y [Y]`` (defaults:
    0..1 and cell centres on [0, 1]) are repeated to ``[N, ...]``; ``dt``/``dx``/``dy``
    are derived. PDEArena's own files hold one split each (see
    :func:`pdearena_file_name`); appending another split is allowed for tests.
    """
    path = Path(path)
    shape = np.shape(u)
    for name, arr in zip(FIELDS, (u, vx, vy)):
        if np.ndim(arr) != 4 or np.shape(arr) != shape:
            raise DataError(f"{path}: {name} must be [N, T, X, Y] like u {shape}, got {np.shape(arr)}")
    n, frames, nx, ny = shape
    t = np.linspace(0.0, 1.0, frames) if t is None else np.asarray(t, dtype=np.float64)
    x = cell_centres(nx) if x is None else np.asarray(x, dtype=np.float64)
    y = cell_centres(ny) if y is None else np.asarray(y, dtype=np.float64)
    buo = np.broadcast_to(np.asarray(buo_y, dtype=np.float64), (n,))
    with h5py.File(path, "a") as f:
        if split in f:
            raise DataError(f"{path}: split group {split!r} already exists")
        g = f.create_group(split)
        for name, arr in zip(FIELDS, (u, vx, vy)):
            g.create_dataset(name, data=np.asarray(arr, dtype=np.float64))
        for name, coord, fallback in (("t", t, 1.0), ("x", x, 1.0 / nx), ("y", y, 1.0 / ny)):
            g.create_dataset(name, data=np.tile(coord.astype(np.float64), (n, 1)))
            g.create_dataset("d" + name, data=np.full(n, step(coord, fallback), dtype=np.float64))
        g.create_dataset("buo_y", data=buo)
    return path


def pdearena_files(source: PathLike) -> list[Path]:
    """The PDEArena files a source names: a folder (every ``*.h5`` under it), a glob, or one file; sorted."""
    text = str(source)
    if any(ch in text for ch in "*?["):
        files = [Path(p) for p in glob.glob(text, recursive=True)]
    elif Path(text).is_dir():
        files = list(Path(text).rglob("*.h5"))
    elif Path(text).exists():
        files = [Path(text)]
    else:
        raise DataError(f"{text}: no such file or folder ({LAYOUT} layout expected)")
    files = sorted(p for p in files if p.is_file())
    if not files:
        raise DataError(f"{text}: no PDEArena files found (expected NavierStokes2D_{{train,valid,test}}_*.h5)")
    return files


def pdearena_split_of(path: PathLike) -> str:
    """The split a file holds, by DPOT's rule on its name: 'test' first, then 'train', then 'valid'."""
    name = Path(path).name
    for split in ("test", "train", "valid"):
        if split in name:
            return split
    raise DataError(f"{path}: file name names no split (train, valid or test), as PDEArena's files do")


def count_pdearena_ns(path: PathLike) -> dict[str, int]:
    """Trajectories per split group of one file, without reading data."""
    with open_h5(path, LAYOUT) as f:
        out = {}
        for split in SPLITS:
            if split in f:
                out[split] = int(require_dataset(f[split], "u", path, LAYOUT, ndim=4).shape[0])
        if not out:
            found = ", ".join(f.keys()) or "nothing"
            raise DataError(f"{path}: no split group {SPLITS} found, not the {LAYOUT} layout (found: {found})")
        return out


def _per_traj(ds: h5py.Dataset, i: int, n: int, coord_ndim: int) -> np.ndarray:
    """Row ``i`` of a per-trajectory array, or the array itself when it is shared."""
    if ds.ndim == coord_ndim + 1 and ds.shape[0] == n:
        return np.asarray(ds[i])
    return np.asarray(ds[()])


def read_pdearena_ns(
    path: PathLike,
    dataset: str,
    split: str | None = None,
    indices: Sequence[int] | range | None = None,
) -> Iterator[Trajectory]:
    """Yield ``[T, X, Y, 3]`` trajectories (u, vx, vy) of one split, with {"buoyancy": buo_y[i]}.

    ``path`` is one file, or a folder or glob of PDEArena's files (then ``split``
    picks the files whose names say it, None takes all; ``indices`` count over the
    files in sorted order). In a file, ``split`` names the group; None is allowed
    when the file holds exactly one split (PDEArena ships one file per split).
    dt/dx/dy come from the ``dt``/``dx``/``dy`` arrays, or from ``t``/``x``/``y`` when
    those are absent. The layout is checked when this is called; data is read as the
    iterator advances.
    """
    if any(ch in str(path) for ch in "*?[") or Path(path).is_dir():
        return _read_many(path, dataset, split, indices)
    path = Path(path)
    with open_h5(path, LAYOUT) as f:
        present = [s for s in SPLITS if s in f]
        if split is None:
            if not present:
                found = ", ".join(f.keys()) or "nothing"
                raise DataError(f"{path}: no split group {SPLITS} found, not the {LAYOUT} layout (found: {found})")
            if len(present) > 1:
                raise DataError(f"{path}: pass split=, the file holds splits {present} ({LAYOUT} layout)")
            split = present[0]
        g = require(f, split, path, LAYOUT)
        if not isinstance(g, h5py.Group):
            raise DataError(f"{path}: key {split!r} is not a group ({LAYOUT} layout)")
        shape: tuple[int, ...] = ()
        for name in FIELDS:
            ds = require_dataset(g, name, path, LAYOUT, ndim=4)
            if shape and ds.shape != shape:
                raise DataError(f"{path}: key '{split}/{name}' has shape {ds.shape}, u has {shape} ({LAYOUT} layout)")
            shape = ds.shape
        for a, b in (("dt", "t"), ("dx", "x"), ("dy", "y")):
            if a not in g and b not in g:
                raise DataError(f"{path}: missing key '{split}/{a}' (and '{split}/{b}') of the {LAYOUT} layout")
        n = shape[0]
        chosen = select(indices, n, path)
    return _stream(path, dataset, split, chosen, shape)


def _read_many(
    source: PathLike, dataset: str, split: str | None, indices: Sequence[int] | range | None
) -> Iterator[Trajectory]:
    files = [f for f in pdearena_files(source) if split is None or pdearena_split_of(f) == split]
    if not files:
        raise DataError(f"{source}: no PDEArena file of split {split!r} found (names NavierStokes2D_{split}_*.h5)")
    spans = [(f, pdearena_split_of(f), count_pdearena_ns(f)[pdearena_split_of(f)]) for f in files]
    offsets = np.cumsum([0] + [n for _, _, n in spans])
    chosen = select(indices, int(offsets[-1]), source)
    parts = []
    for k, (f, group, _) in enumerate(spans):
        local = [i - int(offsets[k]) for i in chosen if offsets[k] <= i < offsets[k + 1]]
        if local:
            parts.append(read_pdearena_ns(f, dataset, split=group, indices=local))
    return chain.from_iterable(parts)


def _spacing(g: h5py.Group, i: int, n: int, name: str, fallback: float) -> float:
    if "d" + name in g:
        return float(np.ravel(_per_traj(g["d" + name], i, n, 0))[0])
    return step(_per_traj(g[name], i, n, 1), fallback)


def _stream(path: Path, dataset: str, split: str, chosen: list[int], shape: tuple[int, ...]) -> Iterator[Trajectory]:
    n, _, nx, ny = shape
    with h5py.File(path, "r") as f:
        g = f[split]
        sets = [g[name] for name in FIELDS]
        for i in chosen:
            data = np.stack([ds[i] for ds in sets], axis=-1)  # 3 x [T, X, Y] -> [T, X, Y, 3]
            dt = _spacing(g, i, n, "t", 1.0)
            dx, dy = _spacing(g, i, n, "x", 1.0 / nx), _spacing(g, i, n, "y", 1.0 / ny)
            cond = {}
            if "buo_y" in g:
                cond["buoyancy"] = float(np.ravel(_per_traj(g["buo_y"], i, n, 0))[0])
            yield Trajectory(dataset, i, data, list(CHANNELS), dt, dx, dy, cond)
