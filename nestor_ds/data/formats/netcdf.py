"""Open a netCDF file whichever way it was written: netCDF-4 files are HDF5 and h5py reads them; classic
(netCDF-3) files need the ``netCDF4`` library, an optional extra (``pip install 'nestor-ds[netcdf]'``).

Readers see one small interface (:class:`NetcdfFile`): variable names, array-like variables that slice
lazily, and a variable's attributes as plain strings or numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nestor_ds.data.shards import DataError
from nestor_ds.errors import UserError

from ._common import PathLike

CLASSIC_MAGIC = b"CDF"  # netCDF-3 classic / 64-bit offset / CDF-5 files start with these bytes
EXTRA = "pip install 'nestor-ds[netcdf]'"


class MissingExtra(UserError):
    """A file needs an optional library that is not installed."""


class NetcdfFile:
    """The variables of an open netCDF file, through h5py (netCDF-4) or netCDF4 (classic)."""

    def __init__(self, path: Path, handle: Any, classic: bool) -> None:
        self.path, self._h, self.classic = path, handle, classic

    def names(self) -> list[str]:
        """Every variable (coordinate variables included)."""
        if self.classic:
            return list(self._h.variables)
        return [k for k, v in self._h.items() if isinstance(v, h5py.Dataset)]

    def _raw(self, name: str) -> Any:
        return self._h.variables[name] if self.classic else self._h[name]

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def var(self, name: str, layout: str, ndim: int | None = None) -> Any:
        """Variable ``name`` (sliceable, ``.shape``), or an error naming the file, the variable and what it holds."""
        if name not in self:
            have = ", ".join(sorted(self.names())) or "nothing"
            raise DataError(f"{self.path}: no variable {name!r} ({layout} layout; the file holds: {have})")
        v = self._raw(name)
        if ndim is not None and len(v.shape) != ndim:
            raise DataError(
                f"{self.path}: variable {name!r} has shape {tuple(v.shape)}, expected {ndim} axes ({layout} layout)"
            )
        return v

    def attr(self, name: str, key: str) -> Any:
        """Attribute ``key`` of variable ``name`` (text decoded), or None when it has none."""
        v = self._raw(name)
        keys = v.ncattrs() if self.classic else v.attrs
        if key not in keys:
            return None
        value = v.getncattr(key) if self.classic else v.attrs[key]
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, np.ndarray) and value.size == 1:
            return value.item().decode() if isinstance(value.item(), bytes) else value.item()
        return value

    def read(self, name: str, index: Any = ()) -> np.ndarray:
        """``variable[index]`` as float32 in physical units (CF packing: ``scale_factor``, ``add_offset`` applied)."""
        raw = np.asarray(self._raw(name)[index])
        scale, offset = self.attr(name, "scale_factor"), self.attr(name, "add_offset")
        if scale is None and offset is None:
            return raw.astype(np.float32, copy=False)
        out = raw.astype(np.float64) * (1.0 if scale is None else float(scale)) + (
            0.0 if offset is None else float(offset)
        )
        return out.astype(np.float32)


@contextmanager
def open_netcdf(path: PathLike, layout: str) -> Iterator[NetcdfFile]:
    """Open ``path`` read-only; errors name the file and the layout expected, or the extra to install."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file ({layout} layout expected)")
    if h5py.is_hdf5(p):
        try:
            handle = h5py.File(p, "r")
        except OSError as err:
            raise DataError(f"{p}: cannot be opened ({err}): a truncated or corrupt netCDF-4 file") from None
        with handle:
            yield NetcdfFile(p, handle, classic=False)
        return
    with open(p, "rb") as f:
        magic = f.read(3)
    if magic != CLASSIC_MAGIC:
        raise DataError(f"{p}: neither netCDF-4 (HDF5) nor classic netCDF, so not in the {layout} layout")
    try:
        import netCDF4
    except ImportError:
        raise MissingExtra(
            f"{p}: a classic (netCDF-3) file, which h5py cannot read; install the netcdf extra: {EXTRA}"
        ) from None
    try:
        handle = netCDF4.Dataset(p, "r")
    except OSError as err:
        raise DataError(f"{p}: cannot be opened ({err}): a truncated or corrupt netCDF file") from None
    handle.set_auto_maskandscale(False)
    with handle:
        yield NetcdfFile(p, handle, classic=True)
