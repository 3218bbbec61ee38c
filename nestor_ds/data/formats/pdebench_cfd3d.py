"""PDEBench 3D compressible-NS (CFD) HDF5 files, as PDEBench's ``Data_Merge.py`` writes them.

Top-level ``density``, ``pressure``, ``Vx``, ``Vy``, ``Vz`` each ``[N, T, X, Y, Z]`` float32, plus
``t-coordinate [T+1]``, ``x-coordinate [X]``, ``y-coordinate [Y]``, ``z-coordinate [Z]`` and the file
attributes ``eta``, ``zeta``, ``M`` (file names ``3D_CFD_<Rand|Turb>_M.._Eta.._Zeta.._periodic_Train.hdf5``).
A 128^3 file of 100 trajectories and 21 frames is ~88 GB, so the reader slices one trajectory per field.

Channels come out in DPOT's order (``Vx, Vy, Vz, pressure, density``: DPOT's ``preprocess.py``
``process_pdebench3d_data`` stacks them so, unlike its 2-D order) unless ``channel_order="file"``.
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
from .pdebench_cfd import cfd_attrs_conditioning, write_cfd_attrs

LAYOUT = "pdebench_cfd3d"
FIELDS = ["density", "pressure", "Vx", "Vy", "Vz"]
CHANNEL_ORDERS = {
    "dpot": ["Vx", "Vy", "Vz", "pressure", "density"],
    "file": ["density", "pressure", "Vx", "Vy", "Vz"],
}
_NUM = r"([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)"
_PARTS = {
    "mach": re.compile(rf"_M{_NUM}(?=[_.]|$)"),
    "eta": re.compile(rf"_Eta{_NUM}"),
    "zeta": re.compile(rf"_Zeta{_NUM}"),
}


def parse_conditioning_3d(path: PathLike) -> dict[str, float]:
    """Mach number and viscosities from a PDEBench 3-D file name (either order of M, Eta, Zeta); a fallback
    for the file's own attributes."""
    name = Path(path).name
    return {key: float(m.group(1)) for key, rx in _PARTS.items() if (m := rx.search(name))}


def write_pdebench_cfd3d(
    path: PathLike,
    density: np.ndarray,
    pressure: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    vz: np.ndarray,
    t: np.ndarray | None = None,
    coords: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    mach: float | None = None,
    eta: float | None = None,
    zeta: float | None = None,
) -> Path:
    """Write five ``[N, T, X, Y, Z]`` fields in the PDEBench 3D CFD layout.

    ``t`` has T+1 entries, as PDEBench's; coordinates default to cell centres on [0, 1];
    ``mach``/``eta``/``zeta`` become the attributes ``M``/``eta``/``zeta``."""
    path = Path(path)
    fields = dict(zip(FIELDS, (density, pressure, vx, vy, vz)))
    shape = np.shape(density)
    for name, arr in fields.items():
        if np.ndim(arr) != 5 or np.shape(arr) != shape:
            raise DataError(f"{path}: {name} must be [N, T, X, Y, Z] like density {shape}, got {np.shape(arr)}")
    _, frames, nx, ny, nz = shape
    t = np.linspace(0.0, 1.0, frames + 1) if t is None else np.asarray(t)
    xyz = coords if coords is not None else (cell_centres(nx), cell_centres(ny), cell_centres(nz))
    with h5py.File(path, "w") as f:
        for name, arr in fields.items():
            f.create_dataset(name, data=np.asarray(arr, dtype=np.float32))
        for axis, c in zip("xyz", xyz):
            f.create_dataset(f"{axis}-coordinate", data=np.asarray(c, dtype=np.float32))
        f.create_dataset("t-coordinate", data=t.astype(np.float32))
        write_cfd_attrs(f, mach, eta, zeta)
    return path


def _density(f: h5py.File, path: PathLike) -> h5py.Dataset:
    ds = require_dataset(f, "density", path, LAYOUT)
    if ds.ndim == 4:
        raise DataError(
            f"{path}: holds 2-D fields (density {ds.shape} = [N, T, X, Y]); the {LAYOUT} layout is [N, T, X, Y, Z] "
            f"(a 2-D PDEBench CFD file is format pdebench_cfd)"
        )
    if ds.ndim != 5:
        raise DataError(f"{path}: key 'density' has shape {ds.shape}, expected [N, T, X, Y, Z] ({LAYOUT} layout)")
    return ds


def count_pdebench_cfd3d(path: PathLike) -> int:
    """Trajectories in a PDEBench 3-D CFD file, read from its shape alone."""
    with open_h5(path, LAYOUT) as f:
        return int(_density(f, path).shape[0])


def read_pdebench_cfd3d(
    path: PathLike,
    dataset: str,
    split: str | None = None,
    indices: Sequence[int] | range | None = None,
    channel_order: str = "dpot",
) -> Iterator[Trajectory]:
    """Yield ``[T, X, Y, Z, 5]`` trajectories, one HDF5 slice per field; the layout is checked when called.

    Channels: Vx, Vy, Vz, pressure, density (``"dpot"``) or density, pressure, Vx, Vy, Vz (``"file"``).
    ``split`` must be None (one pool per file; the published split is cut by ``data/splits.py``)."""
    path = Path(path)
    if split is not None:
        raise DataError(f"{path}: the {LAYOUT} layout keeps no splits inside the file; select with indices")
    if channel_order not in CHANNEL_ORDERS:
        raise DataError(f"{path}: channel_order {channel_order!r} is not one of {sorted(CHANNEL_ORDERS)}")
    with open_h5(path, LAYOUT) as f:
        cond = {**parse_conditioning_3d(path), **cfd_attrs_conditioning(f)}
        shape = _density(f, path).shape
        for name in FIELDS:
            ds = require_dataset(f, name, path, LAYOUT)
            if ds.shape != shape:
                raise DataError(f"{path}: key {name!r} has shape {ds.shape}, density has {shape} ({LAYOUT} layout)")
        n, frames, nx, ny, nz = shape
        t = require_dataset(f, "t-coordinate", path, LAYOUT)[()]
        x, y, z = (require_dataset(f, f"{a}-coordinate", path, LAYOUT)[()] for a in "xyz")
    if np.size(t) not in (frames, frames + 1):
        raise DataError(f"{path}: key 't-coordinate' has {np.size(t)} entries for {frames} frames ({LAYOUT} layout)")
    spacing = (step(t, 1.0), step(x, 1.0 / nx), step(y, 1.0 / ny), step(z, 1.0 / nz))
    chosen = select(indices, n, path)
    return _stream(path, dataset, chosen, spacing, cond, CHANNEL_ORDERS[channel_order])


def _stream(
    path: Path,
    dataset: str,
    chosen: list[int],
    spacing: tuple[float, float, float, float],
    cond: dict[str, float],
    channels: list[str],
) -> Iterator[Trajectory]:
    dt, dx, dy, dz = spacing
    with h5py.File(path, "r") as f:
        sets = [f[name] for name in channels]
        for i in chosen:
            try:
                data = np.stack([ds[i] for ds in sets], axis=-1)  # 5 x [T, X, Y, Z] -> [T, X, Y, Z, 5]
            except OSError as err:  # a file cut short: h5py reads past its end
                raise DataError(f"{path}: trajectory {i} cannot be read ({err}): a truncated or corrupt file") from None
            yield Trajectory(dataset, i, data, list(channels), dt, dx, dy, dict(cond), dz=dz)
