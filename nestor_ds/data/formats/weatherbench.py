"""ERA5 as WeatherBench ships it (Rasp et al. 2020): one folder per variable, one netCDF file per year.

``<root>/geopotential_500/geopotential_500hPa_1979_1.40625deg.nc`` and so on, each holding the variable
(``z``, ``t``, ``u10``, ``v10``) as ``[time, lat, lon]`` (a size-1 ``level`` axis is accepted) with hourly
``time`` (``hours since ...``), ``lat`` and ``lon`` coordinates; 1.40625 deg gives a 128 x 256 grid.

NESTOR fine-tunes on "EAR5" (128 x 256, 16 frames, 6 in, 4 channels) without saying which variables, years or
step; our documented default (README, "Downstream sets"):

- variables z500, t850, u10, v10 (:data:`VARIABLES`), in that channel order, all predicted;
- 6-hourly frames (every 6th hourly record), cut into non-overlapping windows of 16 frames within a year
  (the leftover frames of a year are dropped), each window one trajectory;
- WeatherBench's own split by year: train up to 2015, valid 2016, test 2017 onwards.

``dt`` is the step in hours, ``dx``/``dy`` the latitude and longitude spacing in degrees. Every variable must
hold the same years, and the years must run without a gap; what is missing is named.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nestor_ds.data.shards import DataError

from ..trajectory import Trajectory
from ._common import PathLike, select, step
from .netcdf import open_netcdf

LAYOUT = "weatherbench"
# (folder, file stem before the year, variable in the file, our channel name)
VARIABLES = (
    ("geopotential_500", "geopotential_500hPa", "z", "z500"),
    ("temperature_850", "temperature_850hPa", "t", "t850"),
    ("10m_u_component_of_wind", "10m_u_component_of_wind", "u10", "u10"),
    ("10m_v_component_of_wind", "10m_v_component_of_wind", "v10", "v10"),
)
STRIDE = 6  # hourly records per frame: 6-hourly
WINDOW = 16  # frames per trajectory (NESTOR's t_total)
VALID_YEAR, FIRST_TEST_YEAR = 2016, 2017  # WeatherBench: train to 2015, valid 2016, test 2017-2018
_FILE = re.compile(r"^(?P<stem>.+)_(?P<year>\d{4})_(?P<res>[0-9.]+)deg\.nc$")


def split_of(year: int) -> str:
    """WeatherBench's split of a year."""
    return "train" if year < VALID_YEAR else "valid" if year == VALID_YEAR else "test"


@dataclass(frozen=True)
class _Year:
    """One year's files (one per variable) and how many windows it yields."""

    year: int
    files: tuple[Path, ...]
    records: int  # hourly records in the year's files
    windows: int


def _years(root: Path) -> list[_Year]:
    """Every year of the folder, checked: each variable has a file for each year, no year skipped."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (WeatherBench layout: <variable>/<variable>_<year>_<res>deg.nc)")
    per_var: list[dict[int, Path]] = []
    for folder, stem, _, _ in VARIABLES:
        d = root / folder
        if not d.is_dir():
            raise DataError(f"{root}: variable folder {folder}/ is missing ({LAYOUT} layout needs {_folders()})")
        found = {int(m["year"]): p for p in d.iterdir() if (m := _FILE.match(p.name)) and m["stem"] == stem}
        if not found:
            raise DataError(f"{d}: no {stem}_<year>_<res>deg.nc file ({LAYOUT} layout)")
        per_var.append(found)
    every = sorted(set().union(*per_var))
    for (folder, stem, _, _), found in zip(VARIABLES, per_var):
        lacking = [y for y in every if y not in found]
        if lacking:
            raise DataError(
                f"{root / folder}: no {stem} file for year {lacking[0]} (the other variables have it; "
                f"{len(lacking)} year(s) missing)"
            )
    gaps = sorted(set(range(every[0], every[-1] + 1)) - set(every))
    if gaps:
        raise DataError(f"{root}: year {gaps[0]} is missing from every variable (years {every[0]}-{every[-1]} found)")
    out = []
    for year in every:
        files = tuple(found[year] for found in per_var)
        records = _records(files)
        out.append(_Year(year, files, records, (-(-records // STRIDE)) // WINDOW))
    return out


def _folders() -> str:
    return ", ".join(f"{folder}/" for folder, _, _, _ in VARIABLES)


def _records(files: Sequence[Path]) -> int:
    """Hourly records of one year, the same in every variable's file."""
    lengths = []
    for path, (_, _, name, _) in zip(files, VARIABLES):
        with open_netcdf(path, LAYOUT) as nc:
            v = nc.var(name, LAYOUT)
            if len(v.shape) == 4 and v.shape[1] == 1:
                pass  # a size-1 level axis
            elif len(v.shape) != 3:
                raise DataError(f"{path}: variable {name!r} is {tuple(v.shape)}, expected [time, lat, lon]")
            lengths.append(int(v.shape[0]))
    if len(set(lengths)) > 1:
        raise DataError(
            f"{files[0].parent.parent}: the year's files hold {lengths} records ({[p.name for p in files]})"
        )
    return lengths[0]


def count_weatherbench(root: PathLike) -> dict[str, int]:
    """Windows (trajectories) per split of a WeatherBench folder, from the files' shapes alone."""
    counts: dict[str, int] = {"train": 0, "valid": 0, "test": 0}
    for y in _years(Path(root)):
        counts[split_of(y.year)] += y.windows
    return counts


def read_weatherbench(
    root: PathLike,
    dataset: str,
    split: str | None = None,
    indices: Sequence[int] | range | None = None,
) -> Iterator[Trajectory]:
    """Yield ``[16, lat, lon, 4]`` windows of split ``split`` (train, valid or test by year); ``indices`` count
    windows within that split, in time order."""
    root = Path(root)
    if split not in ("train", "valid", "test"):
        raise DataError(f"{root}: the {LAYOUT} layout is split by year; give split train, valid or test, not {split!r}")
    every = _years(root)
    windows = [(y, w) for y in every if split_of(y.year) == split for w in range(y.windows)]
    chosen = select(indices, len(windows), root, what=f"{split} windows")
    with open_netcdf(every[0].files[0], LAYOUT) as nc:
        dt = STRIDE * step(nc.read("time"), 1.0) if "time" in nc else float(STRIDE)
        dx = abs(step(nc.read("lat"), 1.0)) if "lat" in nc else 1.0
        dy = abs(step(nc.read("lon"), 1.0)) if "lon" in nc else 1.0
    return _stream(dataset, [windows[i] for i in chosen], chosen, dt, dx, dy)


def _stream(
    dataset: str, picks: list[tuple[_Year, int]], positions: list[int], dt: float, dx: float, dy: float
) -> Iterator[Trajectory]:
    names = [channel for _, _, _, channel in VARIABLES]
    for (year, w), pos in zip(picks, positions):
        span = slice(w * WINDOW * STRIDE, (w + 1) * WINDOW * STRIDE, STRIDE)
        fields = []
        for path, (_, _, name, _) in zip(year.files, VARIABLES):
            with open_netcdf(path, LAYOUT) as nc:
                v = nc.read(name, span)
            fields.append(v[:, 0] if v.ndim == 4 else v)
        yield Trajectory(dataset, pos, np.stack(fields, axis=-1), list(names), dt, dx, dy, {"year": float(year.year)})


def write_weatherbench(
    root: PathLike,
    year: int,
    fields: Mapping[str, np.ndarray],
    lat: np.ndarray,
    lon: np.ndarray,
    hours_from: int = 0,
) -> list[Path]:
    """Write one year of WeatherBench files (netCDF-4: HDF5 with dimension scales) for each of
    :data:`VARIABLES`; ``fields`` maps our channel names to hourly ``[time, lat, lon]`` arrays."""
    import h5py

    root = Path(root)
    written = []
    for folder, stem, name, channel in VARIABLES:
        if channel not in fields:
            raise DataError(f"{root}: no field {channel!r} given for {folder} (need {[v[3] for v in VARIABLES]})")
        data = np.asarray(fields[channel], dtype=np.float32)
        path = root / folder / f"{stem}_{year}_{abs(float(lat[1] - lat[0])):g}deg.nc"
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            coords = {
                "time": np.arange(hours_from, hours_from + data.shape[0], dtype=np.int64),
                "lat": np.asarray(lat, np.float64),
                "lon": np.asarray(lon, np.float64),
            }
            for key, values in coords.items():
                f.create_dataset(key, data=values).make_scale(key)
            f["time"].attrs["units"] = f"hours since {year}-01-01"
            f["lat"].attrs["units"], f["lon"].attrs["units"] = "degrees_north", "degrees_east"
            v = f.create_dataset(name, data=data)
            for axis, key in enumerate(coords):
                v.dims[axis].attach_scale(f[key])
        written.append(path)
    return written
