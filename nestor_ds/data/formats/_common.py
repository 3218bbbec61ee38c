"""Helpers the format readers share: index selection, key checks and grid steps.

They exist so every reader reports bad input the same way: a ``ValueError`` that
names the file and the key, never a bare ``KeyError`` or an ``assert``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nestor_ds.data.shards import DataError

PathLike = str | Path


def select(indices: Sequence[int] | range | None, n: int, path: PathLike, what: str = "trajectories") -> list[int]:
    """Resolve ``indices`` against ``n`` items up front, so a bad index fails before any data is read."""
    if indices is None:
        return list(range(n))
    chosen = [int(i) for i in indices]
    bad = [i for i in chosen if not 0 <= i < n]
    if bad:
        raise DataError(f"{path}: index {bad[0]} out of range, the file holds {n} {what}")
    return chosen


def open_h5(path: PathLike, layout: str) -> h5py.File:
    """Open read-only, turning 'not HDF5' into an error that names the file and the layout expected."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file ({layout} layout expected)")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, expected a {layout} HDF5 file")
    if not h5py.is_hdf5(p):
        raise DataError(f"{p}: not an HDF5 file, so not in the {layout} layout")
    try:
        return h5py.File(p, "r")
    except OSError as err:  # e.g. "truncated file": the header is there, the rest is not
        raise DataError(f"{p}: cannot be opened ({err}): a truncated or corrupt HDF5 file ({layout} layout)") from None


def require(group: h5py.Group, key: str, path: PathLike, layout: str) -> Any:
    """Fetch ``group[key]`` (a dataset or group) or say which key of which file is missing."""
    if key not in group:
        where = group.name.strip("/")
        full = f"{where}/{key}" if where else key
        have = ", ".join(sorted(group.keys())) or "nothing"
        raise DataError(f"{path}: missing key {full!r} of the {layout} layout (found: {have})")
    return group[key]


def require_dataset(group: h5py.Group, key: str, path: PathLike, layout: str, ndim: int | None = None) -> h5py.Dataset:
    """Like :func:`require`, and check the object is a dataset of the expected rank."""
    obj = require(group, key, path, layout)
    name = obj.name.lstrip("/")
    if not isinstance(obj, h5py.Dataset):
        raise DataError(f"{path}: key {name!r} is a group, expected a dataset ({layout} layout)")
    if ndim is not None and obj.ndim != ndim:
        raise DataError(f"{path}: key {name!r} has shape {obj.shape}, expected {ndim} axes ({layout} layout)")
    return obj


def step(coord: np.ndarray, fallback: float) -> float:
    """Spacing of a uniform coordinate vector; ``fallback`` when it has fewer than two points."""
    c = np.asarray(coord, dtype=np.float64).ravel()
    if c.size < 2:
        return float(fallback)
    return float(c[1] - c[0])


def cell_centres(n: int) -> np.ndarray:
    """Default coordinates on [0, 1] for writers called without a grid."""
    return ((np.arange(n) + 0.5) / n).astype(np.float32)
