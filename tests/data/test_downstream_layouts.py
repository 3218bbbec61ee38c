"""NESTOR's downstream sets in the layouts they ship in, written here with raw h5py / netCDF4 calls (not our
writers): Poseidon's Wave files (merged, and the netCDF pieces) and WeatherBench's yearly netCDF folders.
Values bit-exact, published splits, channel names, the wave speed input only, and one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest

from nestor_ds.config.datasets import REGISTRY
from nestor_ds.data import formats as F
from nestor_ds.data.convert import shard_dataset
from nestor_ds.data.formats import weatherbench as wb
from nestor_ds.data.formats.netcdf import MissingExtra
from nestor_ds.data.shards import DataError, read_manifest
from nestor_ds.data.splits import plan_splits
from tests.data.test_published_layouts import rand, shard_data

# ---------------------------------------------------------------- Poseidon Wave-Layer / Wave-Gauss


def write_merged_like_poseidon(path: Path, n: int, frames: int, grid: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """What Poseidon's acoustic.py opens with h5py: ``solution [N, T, X, Y]`` and ``c [N, X, Y]``."""
    u, c = rand(n, frames, grid, grid, seed=1), 3000 + 500 * rand(n, grid, grid, seed=2)
    with h5py.File(path, "w") as f:
        f.create_dataset("solution", data=u)
        f.create_dataset("c", data=c)
    return u, c


def test_wave_merged_file_published_split_and_channels(tmp_path: Path) -> None:
    """310 samples: train [0, 10), valid the 60 before the test, test the last 240 (Poseidon's post_init);
    channels u (predicted) and c (constant in time, input only); frames from the file."""
    path = tmp_path / "Wave-Gauss.nc"
    u, c = write_merged_like_poseidon(path, 310, 16)
    info = REGISTRY["wave_gauss"]
    plan = plan_splits(info, "poseidon_wave", path)
    assert [it.index for it in plan["train"]] == list(range(10))
    assert [it.index for it in plan["valid"]] == list(range(10, 70))
    assert [it.index for it in plan["test"]] == list(range(70, 310))
    assert (REGISTRY["wave_layer"].frames, info.frames, info.rollout, info.train) == (21, 16, 15, 10212)

    shard_dataset("wave_gauss", path, tmp_path / "s", per_shard=64, progress=False)
    root = tmp_path / "s" / "wave_gauss"
    test = shard_data(root / "test")
    assert [len(shard_data(root / s)) for s in ("train", "valid")] + [len(test)] == [10, 60, 240]
    np.testing.assert_array_equal(test[5][..., 0], u[75])
    np.testing.assert_array_equal(test[5][..., 1], np.broadcast_to(c[75], (16, 8, 8)))
    manifest = read_manifest(root / "test")
    assert manifest["channels"] == ["u", "c"] and manifest["predicted_channels"] == 1
    traj = next(F.read_poseidon_wave(path, "wave_gauss", indices=[0]))
    assert traj.dt == pytest.approx(1 / 15) and traj.dx == pytest.approx(1 / 8) and traj.predicted == 1


def write_pieces_with_netcdf4(folder: Path, u: np.ndarray, c: np.ndarray, cuts: list[int]) -> None:
    """The pieces as they ship: solution_k.nc (netCDF-4) and c_0.nc (here classic netCDF-3, so the netcdf
    extra reads it)."""
    for k, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, len(u)])):
        with netCDF4.Dataset(folder / f"solution_{k}.nc", "w", format="NETCDF4") as ds:
            for dim, size in zip(("sample", "time", "x", "y"), u[lo:hi].shape):
                ds.createDimension(dim, size)
            ds.createVariable("solution", "f4", ("sample", "time", "x", "y"))[:] = u[lo:hi]
    with netCDF4.Dataset(folder / "c_0.nc", "w", format="NETCDF3_CLASSIC") as ds:
        for dim, size in zip(("sample", "x", "y"), c.shape):
            ds.createDimension(dim, size)
        ds.createVariable("c", "f4", ("sample", "x", "y"))[:] = c


def test_wave_pieces_read_as_the_merged_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    u, c = rand(9, 21, 6, 6, seed=3), rand(9, 6, 6, seed=4)
    write_pieces_with_netcdf4(tmp_path, u, c, [4, 7])
    assert F.count_poseidon_wave(tmp_path) == 9
    got = list(F.read_poseidon_wave(tmp_path, "wave_layer", indices=[8, 3, 4]))
    assert [t.index for t in got] == [8, 3, 4]
    for t in got:
        np.testing.assert_array_equal(t.data[..., 0], u[t.index])
        np.testing.assert_array_equal(t.data[..., 1], np.broadcast_to(c[t.index], (21, 6, 6)))
    plan = plan_splits(REGISTRY["wave_layer"], "poseidon_wave", tmp_path, test=4)
    assert [len(plan[s]) for s in ("train", "valid", "test")] == [4, 1, 4]  # the valid block keeps 60:240

    monkeypatch.setitem(sys.modules, "netCDF4", None)  # as if the netcdf extra were not installed
    with pytest.raises(MissingExtra) as err:
        F.count_poseidon_wave(tmp_path)
    assert "c_0.nc" in str(err.value) and "nestor-ds[netcdf]" in str(err.value) and "\n" not in str(err.value)


def test_wave_bad_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "Wave-Layer.nc"  # a netCDF file holding u and c, but no solution
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        for dim, size in (("sample", 3), ("time", 5), ("x", 4), ("y", 4)):
            ds.createDimension(dim, size)
        ds.createVariable("u", "f4", ("sample", "time", "x", "y"))[:] = rand(3, 5, 4, 4)
        ds.createVariable("c", "f4", ("sample", "x", "y"))[:] = rand(3, 4, 4)
    with pytest.raises(DataError) as err:
        shard_dataset("wave_layer", path, tmp_path / "s", test=1, progress=False)
    msg = str(err.value)
    assert str(path) in msg and "'solution'" in msg and "\n" not in msg
    assert not (tmp_path / "s" / "wave_layer").exists()
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    write_pieces_with_netcdf4(pieces, rand(4, 3, 4, 4), rand(4, 4, 4), [2])
    (pieces / "solution_0.nc").unlink()
    with pytest.raises(DataError, match="solution_0.nc is missing"):
        F.count_poseidon_wave(pieces)
    write_pieces_with_netcdf4(pieces, rand(4, 3, 4, 4), rand(3, 4, 4), [2])
    with pytest.raises(DataError, match=r"c_0.nc: c is \(3, 4, 4\), expected \[4, 4, 4\]"):
        F.count_poseidon_wave(pieces)


# ---------------------------------------------------------------- WeatherBench (ERA5)


def write_year_like_xarray(root: Path, year: int, hours: int, lat: np.ndarray, lon: np.ndarray) -> dict:
    """One year of the four variables as WeatherBench's files hold them (xarray's netCDF-4: ``[time, lat, lon]``
    float32, hourly ``time`` in hours since 1979-01-01)."""
    out = {}
    for k, (folder, stem, var, _) in enumerate(wb.VARIABLES):
        data = rand(hours, len(lat), len(lon), seed=year * 10 + k)
        (root / folder).mkdir(parents=True, exist_ok=True)
        with netCDF4.Dataset(root / folder / f"{stem}_{year}_5.625deg.nc", "w", format="NETCDF4") as ds:
            for dim, size in (("time", hours), ("lat", len(lat)), ("lon", len(lon))):
                ds.createDimension(dim, size)
            t = ds.createVariable("time", "i8", ("time",))
            t.units = "hours since 1979-01-01"
            t[:] = (year - 1979) * 8760 + np.arange(hours)
            ds.createVariable("lat", "f8", ("lat",))[:] = lat
            ds.createVariable("lon", "f8", ("lon",))[:] = lon
            ds.createVariable(var, "f4", ("time", "lat", "lon"))[:] = data
        out[var] = data
    return out


def test_weatherbench_years_windows_and_channels(tmp_path: Path) -> None:
    """Six-hourly windows of 16 frames within a year, WeatherBench's years split, z500/t850/u10/v10."""
    lat, lon = np.linspace(-87.1875, 87.1875, 4), np.arange(8) * 45.0
    years = {y: write_year_like_xarray(tmp_path, y, 2 * 96 + 10, lat, lon) for y in (2015, 2016, 2017, 2018)}
    assert F.count_weatherbench(tmp_path) == {"train": 2, "valid": 2, "test": 4}
    plan = plan_splits(REGISTRY["era5"], "weatherbench", tmp_path)
    assert {s: len(v) for s, v in plan.items()} == {"train": 2, "valid": 2, "test": 4}
    got = list(F.read_weatherbench(tmp_path, "era5", split="test", indices=[3]))[0]
    assert got.channels == ["z500", "t850", "u10", "v10"] and got.data.shape == (16, 4, 8, 4)
    for k, var in enumerate(("z", "t", "u10", "v10")):
        np.testing.assert_array_equal(got.data[..., k], years[2018][var][96:192:6])
    assert (got.dt, got.dx, got.dy) == (6.0, 58.125, 45.0) and got.conditioning == {"year": 2018.0}

    shard_dataset("era5", tmp_path, tmp_path / "s", progress=False)
    train = shard_data(tmp_path / "s" / "era5" / "train")
    np.testing.assert_array_equal(train[1][..., 0], years[2015]["z"][96:192:6])
    assert REGISTRY["era5"].grid == (128, 256) and (REGISTRY["era5"].dpot_train, REGISTRY["era5"].dpot_test) == (
        1449,
        2905,
    )


def test_weatherbench_missing_year_or_variable_is_named(tmp_path: Path) -> None:
    lat, lon = np.linspace(-80, 80, 3), np.arange(4) * 90.0
    for y in (2015, 2016, 2017):
        write_year_like_xarray(tmp_path, y, 96, lat, lon)
    t850 = tmp_path / "temperature_850" / "temperature_850hPa_2016_5.625deg.nc"
    t850.unlink()
    with pytest.raises(DataError) as err:
        shard_dataset("era5", tmp_path, tmp_path / "s", progress=False)
    msg = str(err.value)
    assert "temperature_850" in msg and "2016" in msg and "\n" not in msg
    assert not (tmp_path / "s" / "era5").exists()
    for folder, stem, _, _ in wb.VARIABLES:
        (tmp_path / folder / f"{stem}_2016_5.625deg.nc").unlink(missing_ok=True)
    with pytest.raises(DataError, match="year 2016 is missing from every variable"):
        F.count_weatherbench(tmp_path)
    for p in (tmp_path / "10m_v_component_of_wind").iterdir():
        p.unlink()
    (tmp_path / "10m_v_component_of_wind").rmdir()
    with pytest.raises(DataError, match="variable folder 10m_v_component_of_wind/ is missing"):
        F.count_weatherbench(tmp_path)
