"""FNO Navier-Stokes ``.mat`` files (keys ``u``, ``a``, ``t``), MATLAB v5 and v7.3.

MATLAB's shape is ``u[N, X, Y, T]``. A v5 file is read whole by scipy (such files
are under 2 GB). A v7.3 file is HDF5 whose arrays h5py sees with the axes reversed,
``u[T, Y, X, N]``; it is streamed in blocks of consecutive trajectories (N is the
fastest axis on disk). Both variants give the same ``[T, X, Y, 1]`` trajectories, in
MATLAB's axis order as FNO's own ``MatReader`` returns them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import scipy.io

from nestor_ds.data.shards import DataError

from ..trajectory import Trajectory
from ._common import PathLike, open_h5, require_dataset, select

LAYOUT = "fno_mat"
CHANNELS = ["vorticity"]


def _dt(t: np.ndarray, path: PathLike, frames: int) -> float:
    t = np.asarray(t, dtype=np.float64).ravel()
    if t.size != frames:
        raise DataError(f"{path}: key 't' has {t.size} entries but 'u' has {frames} frames ({LAYOUT} layout)")
    if t.size >= 2:
        return float(t[1] - t[0])
    return float(t[0]) if t.size == 1 and t[0] > 0 else 1.0


def _matlab_header() -> bytes:
    """The 128-byte text header MATLAB puts in the 512-byte user block of a v7.3 file."""
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime())
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {stamp} HDF5 schema 1.00 ."
    return text.ljust(116).encode("ascii") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def _matlab_class(arr: np.ndarray) -> bytes:
    return {np.dtype(np.float32): b"single", np.dtype(np.float64): b"double"}.get(arr.dtype, b"double")


def write_fno_mat(
    path: PathLike,
    u: np.ndarray,
    t: np.ndarray | None = None,
    a: np.ndarray | None = None,
    version: Literal["5", "7.3"] = "5",
) -> Path:
    """Write ``u[N, X, Y, T]`` (MATLAB order) as an FNO ``.mat`` file, v5 or v7.3.

    ``t`` defaults to ``1..T``; ``a`` (initial condition) to ``u[..., 0]``. The v7.3
    variant is written as MATLAB does: HDF5 with reversed axes, a 512-byte user
    block holding the MATLAB header, and a ``MATLAB_class`` attribute per array.
    """
    path = Path(path)
    u = np.asarray(u)
    if u.ndim != 4:
        raise DataError(f"{path}: u must be [N, X, Y, T], got shape {u.shape}")
    frames = u.shape[-1]
    t = np.arange(1, frames + 1, dtype=np.float64) if t is None else np.asarray(t, dtype=np.float64).ravel()
    if t.size != frames:
        raise DataError(f"{path}: t has {t.size} entries, u has {frames} frames")
    a = u[..., 0] if a is None else np.asarray(a)
    arrays = {"a": a, "u": u, "t": t.reshape(1, -1)}  # MATLAB keeps t as a 1 x T row
    if version == "5":
        scipy.io.savemat(path, arrays, format="5", do_compression=False)
    elif version == "7.3":
        with h5py.File(path, "w", userblock_size=512) as f:
            for key, arr in arrays.items():
                ds = f.create_dataset(key, data=np.ascontiguousarray(arr.T))  # h5py shape = reversed MATLAB shape
                ds.attrs["MATLAB_class"] = np.bytes_(_matlab_class(arr))
        with open(path, "r+b") as fh:
            fh.write(_matlab_header())
    else:
        raise DataError(f"{path}: unknown MATLAB version {version!r}, use '5' or '7.3'")
    return path


def _read_v73(path: Path, dataset: str, indices: Sequence[int] | range | None) -> Iterator[Trajectory]:
    with open_h5(path, LAYOUT) as f:
        u = require_dataset(f, "u", path, LAYOUT)
        t = require_dataset(f, "t", path, LAYOUT)[()]
        if u.ndim == 3:  # MATLAB drops a trailing singleton T: [N, X, Y] -> h5py [Y, X, N]
            shape = (1, *u.shape)
        elif u.ndim == 4:
            shape = u.shape
        else:
            raise DataError(f"{path}: key 'u' has shape {u.shape}, expected [T, Y, X, N] in HDF5 ({LAYOUT} v7.3)")
        frames, ny, nx, n = shape
        dt = _dt(t, path, frames)
        chosen = select(indices, n, path)
    return _stream_v73(path, dataset, chosen, dt, nx)


BLOCK_BYTES = 256 * 2**20  # one HDF5 read covers this much of consecutive trajectories


def _runs(chosen: list[int]) -> Iterator[range]:
    """Consecutive runs of ``chosen`` (in its order): each run is one contiguous slice of the file."""
    if not chosen:
        return
    start = prev = chosen[0]
    for i in chosen[1:]:
        if i == prev + 1:
            prev = i
            continue
        yield range(start, prev + 1)
        start = prev = i
    yield range(start, prev + 1)


def _stream_v73(
    path: Path, dataset: str, chosen: list[int], dt: float, nx: int, block_bytes: int = BLOCK_BYTES
) -> Iterator[Trajectory]:
    """Read consecutive trajectories as blocks ``u[..., i0:i1]``.

    N is the fastest axis of the HDF5 array, so one trajectory alone is a strided
    read touching every chunk of the file; a block reads the same chunks once for
    many trajectories (``scripts/bench_convert.py`` measures the difference).
    """
    with h5py.File(path, "r") as f:
        u = f["u"]
        per_traj = max(1, int(np.prod(u.shape[:-1])) * u.dtype.itemsize)
        step_n = max(1, block_bytes // per_traj)
        for run in _runs(chosen):
            for b0 in range(run.start, run.stop, step_n):
                b1 = min(b0 + step_n, run.stop)
                block = np.asarray(u[..., b0:b1])  # [T, Y, X, n] (or [Y, X, n] when T == 1)
                block = block.reshape((-1, *block.shape[-3:]))
                block = np.ascontiguousarray(block.transpose(3, 0, 2, 1))  # -> [n, T, X, Y]
                for k in range(b1 - b0):
                    data = block[k][..., None]
                    yield Trajectory(dataset, b0 + k, data, list(CHANNELS), dt, 1.0 / nx, 1.0 / data.shape[2])


def read_fno_mat_per_trajectory(path: PathLike, dataset: str) -> Iterator[Trajectory]:
    """The old one-strided-column-per-trajectory v7.3 read, kept only as the benchmark's baseline."""
    with h5py.File(path, "r") as f:
        u = f["u"]
        frames, ny, nx, n = u.shape
        dt = _dt(f["t"][()], path, frames)
        for i in range(n):
            data = np.swapaxes(np.asarray(u[..., i]), 1, 2)[..., None]
            yield Trajectory(dataset, i, data, list(CHANNELS), dt, 1.0 / nx, 1.0 / ny)


def _read_v5(path: Path, dataset: str, indices: Sequence[int] | range | None) -> Iterator[Trajectory]:
    try:
        mat = scipy.io.loadmat(path, variable_names=["u", "t"])
    except NotImplementedError as exc:  # v7.3 header on a file h5py could not open
        raise DataError(f"{path}: MATLAB v7.3 header but not a readable HDF5 file ({LAYOUT})") from exc
    except Exception as exc:  # scipy raises several types for 'not a MAT file'
        raise DataError(f"{path}: not a MATLAB .mat file ({LAYOUT} layout expected): {exc}") from exc
    for key in ("u", "t"):
        if key not in mat:
            have = ", ".join(k for k in mat if not k.startswith("__")) or "nothing"
            raise DataError(f"{path}: missing key {key!r} of the {LAYOUT} layout (found: {have})")
    u = mat["u"]
    if u.ndim == 3:  # MATLAB drops a trailing singleton T
        u = u[..., None]
    if u.ndim != 4:
        raise DataError(f"{path}: key 'u' has shape {u.shape}, expected [N, X, Y, T] ({LAYOUT} v5)")
    n, nx, ny, frames = u.shape
    dt = _dt(mat["t"], path, frames)
    chosen = select(indices, n, path)
    return _stream_v5(u, dataset, chosen, dt)


def _stream_v5(u: np.ndarray, dataset: str, chosen: list[int], dt: float) -> Iterator[Trajectory]:
    nx = u.shape[1]
    for i in chosen:
        data = np.moveaxis(u[i], -1, 0)[..., None]  # [X, Y, T] -> [T, X, Y, 1]
        yield Trajectory(dataset, i, data, list(CHANNELS), dt, 1.0 / nx, 1.0 / u.shape[2])


def read_fno_mat(
    path: PathLike,
    dataset: str,
    split: str | None = None,
    indices: Sequence[int] | range | None = None,
) -> Iterator[Trajectory]:
    """Yield the FNO trajectories of ``path`` as ``[T, X, Y, 1]`` "vorticity", dt from ``t``.

    The domain is the unit square: dx = 1/X, dy = 1/Y (equal on the real 64 x 64
    files). ``indices`` picks trajectories (0-based along N); the file is checked when this
    is called, and read lazily as the iterator advances. ``split`` must be None:
    an FNO file holds one pool of trajectories, split them with ``indices``.
    """
    path = Path(path)
    if split is not None:
        raise DataError(f"{path}: the {LAYOUT} layout keeps no splits inside the file; select with indices")
    if not path.exists():
        raise DataError(f"{path}: no such file ({LAYOUT} layout expected)")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a {LAYOUT} .mat file")
    if h5py.is_hdf5(path):
        return _read_v73(path, dataset, indices)
    return _read_v5(path, dataset, indices)


def count_fno_mat(path: PathLike) -> int:
    """Trajectories in an FNO file without reading its data (v5: scipy's header scan; v7.3: the HDF5 shape)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file ({LAYOUT} layout expected)")
    if h5py.is_hdf5(path):
        with open_h5(path, LAYOUT) as f:
            return int(require_dataset(f, "u", path, LAYOUT).shape[-1])
    try:
        shapes = {name: shape for name, shape, _ in scipy.io.whosmat(path)}
    except Exception as exc:  # noqa: BLE001 - scipy raises several types for 'not a MAT file'
        raise DataError(f"{path}: not a MATLAB .mat file ({LAYOUT} layout expected): {exc}") from exc
    if "u" not in shapes:
        raise DataError(f"{path}: missing key 'u' of the {LAYOUT} layout (found: {', '.join(shapes) or 'nothing'})")
    return int(shapes["u"][0])
