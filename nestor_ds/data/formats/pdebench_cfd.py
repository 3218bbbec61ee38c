"""PDEBench 2D compressible-NS (CFD) HDF5 files.

Top-level ``density``, ``pressure``, ``Vx``, ``Vy`` each ``[N, T, X, Y]``, plus
``t-coordinate [T+1]``, ``x-coordinate [X]``, ``y-coordinate [Y]`` and the file
attributes ``M``, ``eta``, ``zeta`` (PDEBench ``Data_Merge.py``). Files run to
hundreds of GB, so the reader slices one trajectory per field at a time.

Channels come out in DPOT's order (Vx, Vy, density, pressure: DPOT's
``preprocess.py`` stacks them so, and its checkpoints expect it) unless
``channel_order="file"`` asks for PDEBench's own order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np

from nestor_ds.data.shards import DataError

from ..trajectory import Trajectory
from ._common import PathLike, cell_centres, open_h5, require_dataset, select, step

LAYOUT = "pdebench_cfd"
FIELDS = ["density", "pressure", "Vx", "Vy"]
CHANNEL_ORDERS = {"dpot": ["Vx", "Vy", "density", "pressure"], "file": ["density", "pressure", "Vx", "Vy"]}

_NUM = r"([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)"
_NAME = re.compile(rf"_M{_NUM}_Eta{_NUM}_Zeta{_NUM}(?=[_.]|$)")


def parse_conditioning(path: PathLike) -> dict[str, float]:
    """Mach number and viscosities from PDEBench's file naming, e.g. ``..._M1.0_Eta0.1_Zeta0.1_...``.

    Only a fallback: the file's own attributes win (the DaRUS archive serves the
    files under numeric ids, so the name may say nothing). Unrecognised: ``{}``.
    """
    m = _NAME.search(Path(path).name)
    if m is None:
        return {}
    return {"mach": float(m.group(1)), "eta": float(m.group(2)), "zeta": float(m.group(3))}


def write_pdebench_cfd(
    path: PathLike,
    density: np.ndarray,
    pressure: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    t: np.ndarray | None = None,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    mach: float | None = None,
    eta: float | None = None,
    zeta: float | None = None,
) -> Path:
    """Write four ``[N, T, X, Y]`` fields in the PDEBench 2D CFD layout.

    ``t`` must have T+1 entries as in PDEBench (default ``0..1``); ``x``/``y``
    default to cell centres on [0, 1]. ``mach``/``eta``/``zeta`` become the file
    attributes ``M``/``eta``/``zeta`` as PDEBench's merge step writes them.
    """
    path = Path(path)
    fields = dict(zip(FIELDS, (density, pressure, vx, vy)))
    shape = np.shape(density)
    for name, arr in fields.items():
        if np.ndim(arr) != 4 or np.shape(arr) != shape:
            raise DataError(f"{path}: {name} must be [N, T, X, Y] like density {shape}, got {np.shape(arr)}")
    _, frames, nx, ny = shape
    t = np.linspace(0.0, 1.0, frames + 1) if t is None else np.asarray(t)
    x = cell_centres(nx) if x is None else np.asarray(x)
    y = cell_centres(ny) if y is None else np.asarray(y)
    with h5py.File(path, "w") as f:
        for name, arr in fields.items():
            f.create_dataset(name, data=np.asarray(arr, dtype=np.float32))
        f.create_dataset("t-coordinate", data=t.astype(np.float32))
        f.create_dataset("x-coordinate", data=x.astype(np.float32))
        f.create_dataset("y-coordinate", data=y.astype(np.float32))
        write_cfd_attrs(f, mach, eta, zeta)
    return path


def write_cfd_attrs(f: h5py.File, mach: float | None, eta: float | None, zeta: float | None) -> None:
    """PDEBench's CFD file attributes ``eta``, ``zeta``, ``M`` (2-D and 3-D alike), those given."""
    for key, value in (("eta", eta), ("zeta", zeta), ("M", mach)):
        if value is not None:
            f.attrs[key] = float(value)


def cfd_attrs_conditioning(f: h5py.File) -> dict[str, float]:
    """Mach number and viscosities from a PDEBench CFD file's own attributes (2-D and 3-D alike)."""
    out = {}
    for key, name in (("M", "mach"), ("eta", "eta"), ("zeta", "zeta")):
        if key in f.attrs:
            out[name] = float(np.ravel(f.attrs[key])[0])
    return out


def count_pdebench_cfd(path: PathLike) -> int:
    """Trajectories in a PDEBench 2-D CFD file, read from its shape alone."""
    with open_h5(path, LAYOUT) as f:
        return int(require_dataset(f, "density", path, LAYOUT, ndim=4).shape[0])


def read_pdebench_cfd(
    path: PathLike,
    dataset: str,
    split: str | None = None,
    indices: Sequence[int] | range | None = None,
    channel_order: str = "dpot",
) -> Iterator[Trajectory]:
    """Yield ``[T, X, Y, 4]`` trajectories, one HDF5 slice per field.

    Channels: Vx, Vy, density, pressure (``channel_order="dpot"``) or density,
    pressure, Vx, Vy (``"file"``). The layout is checked when this is called; data
    is read as the iterator advances. Conditioning (mach, eta, zeta) comes from the
    file attributes, else the file name. ``split`` must be None: the file holds one
    pool, split it with ``indices``.
    """
    path = Path(path)
    if split is not None:
        raise DataError(f"{path}: the {LAYOUT} layout keeps no splits inside the file; select with indices")
    if channel_order not in CHANNEL_ORDERS:
        raise DataError(f"{path}: channel_order {channel_order!r} is not one of {sorted(CHANNEL_ORDERS)}")
    with open_h5(path, LAYOUT) as f:
        cond = {**parse_conditioning(path), **cfd_attrs_conditioning(f)}
        shape: tuple[int, ...] = ()
        for name in FIELDS:
            ds = require_dataset(f, name, path, LAYOUT, ndim=4)
            if shape and ds.shape != shape:
                raise DataError(f"{path}: key {name!r} has shape {ds.shape}, density has {shape} ({LAYOUT} layout)")
            shape = ds.shape
        n, frames, nx, ny = shape
        t = require_dataset(f, "t-coordinate", path, LAYOUT)[()]
        x = require_dataset(f, "x-coordinate", path, LAYOUT)[()]
        y = require_dataset(f, "y-coordinate", path, LAYOUT)[()]
    if np.size(t) not in (frames, frames + 1):
        raise DataError(f"{path}: key 't-coordinate' has {np.size(t)} entries for {frames} frames ({LAYOUT} layout)")
    dt, dx, dy = step(t, 1.0), step(x, 1.0 / nx), step(y, 1.0 / ny)
    chosen = select(indices, n, path)
    return _stream(path, dataset, chosen, dt, dx, dy, cond, CHANNEL_ORDERS[channel_order])


def _stream(
    path: Path,
    dataset: str,
    chosen: list[int],
    dt: float,
    dx: float,
    dy: float,
    cond: dict[str, float],
    channels: list[str],
) -> Iterator[Trajectory]:
    with h5py.File(path, "r") as f:
        sets = [f[name] for name in channels]
        for i in chosen:
            data = np.stack([ds[i] for ds in sets], axis=-1)  # 4 x [T, X, Y] -> [T, X, Y, 4]
            yield Trajectory(dataset, i, data, list(channels), dt, dx, dy, dict(cond))
