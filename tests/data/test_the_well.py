"""The Well reader on folders laid out by raw h5py calls as the_well's docs/data_format.md specifies
(not by our writer): values bit-exact, channel names, input-only conditioning, splits, bad input."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from nestor_ds.config.datasets import DatasetInfo
from nestor_ds.config.loading import parse_config
from nestor_ds.data.convert import shard_dataset
from nestor_ds.data.feedback import INPUT_ONLY, PADDED, PREDICTED
from nestor_ds.data.formats import inspect_well, read_well
from nestor_ds.data.loader import open_sources
from nestor_ds.data.shards import DataError
from nestor_ds.data.trajectories import iter_split

T = 5
STR = h5py.string_dtype()


def _flags(ds: h5py.Dataset, time: bool, sample: bool = True, dims: list[bool] | None = None) -> None:
    ds.attrs["time_varying"] = time
    ds.attrs["sample_varying"] = sample
    if dims is not None:
        ds.attrs["dim_varying"] = dims


def well_file(path: Path, n_traj: int, grid: tuple[int, ...], seed: int, *, grid_type: str = "cartesian") -> dict:
    """A Well file with fields of order 0, 1 and 2, a time-invariant field, a time-varying and a constant scalar,
    a periodic x boundary and a wall on the second axis; returns the arrays written."""
    rng = np.random.default_rng(seed)
    axes = ["x", "y", "z"][: len(grid)]
    d = len(grid)
    arrays = {
        "density": rng.standard_normal((n_traj, T, *grid)).astype(np.float32),
        "velocity": rng.standard_normal((n_traj, T, *grid, d)).astype(np.float32),
        "stress": rng.standard_normal((n_traj, T, *grid, d, d)).astype(np.float32),
        "viscosity": rng.random((n_traj, *grid)).astype(np.float32),  # time-invariant, per trajectory
        "forcing": rng.random(T).astype(np.float32),  # a time-varying scalar, same for all trajectories
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["dataset_name"] = "toy_well"
        f.attrs["grid_type"] = grid_type
        f.attrs["n_spatial_dims"] = d
        f.attrs["n_trajectories"] = n_traj
        f.attrs["simulation_parameters"] = np.array(["Re"], dtype=STR)
        f.attrs["Re"] = 1000.0
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = np.array(axes, dtype=STR)
        _flags(dims.create_dataset("time", data=np.arange(T, dtype=np.float32) * 0.25), time=True, sample=False)
        for a, n in zip(axes, grid):
            _flags(dims.create_dataset(a, data=np.linspace(0, 1, n, endpoint=False, dtype=np.float32)), False, False)
        bcs = f.create_group("boundary_conditions")
        for name, axis, kind in (("x_periodic", "x", "PERIODIC"), ("y_wall", "y", "WALL")):
            g = bcs.create_group(name)
            g.attrs["associated_dims"] = np.array([axis], dtype=STR)
            g.attrs["associated_fields"] = np.array([], dtype=STR)
            g.attrs["bc_type"] = kind
            g.attrs["sample_varying"], g.attrs["time_varying"] = False, False
            mask = np.zeros(grid[axes.index(axis)], dtype=bool)
            mask[[0, -1]] = True
            g.create_dataset("mask", data=mask)
        sc = f.create_group("scalars")
        sc.attrs["field_names"] = np.array(["Re", "forcing"], dtype=STR)
        _flags(sc.create_dataset("Re", data=np.float32(1000.0)), time=False, sample=False)
        _flags(sc.create_dataset("forcing", data=arrays["forcing"]), time=True, sample=False)
        t0 = f.create_group("t0_fields")
        t0.attrs["field_names"] = np.array(["density", "viscosity"], dtype=STR)
        _flags(t0.create_dataset("density", data=arrays["density"]), True, True, [True] * d)
        _flags(t0.create_dataset("viscosity", data=arrays["viscosity"]), False, True, [True] * d)
        t1 = f.create_group("t1_fields")
        t1.attrs["field_names"] = np.array(["velocity"], dtype=STR)
        _flags(t1.create_dataset("velocity", data=arrays["velocity"]), True, True, [True] * d)
        t2 = f.create_group("t2_fields")
        t2.attrs["field_names"] = np.array(["stress"], dtype=STR)
        ds = t2.create_dataset("stress", data=arrays["stress"])
        _flags(ds, True, True, [True] * d)
        ds.attrs["symmetric"], ds.attrs["antisymmetric"] = False, False
    return arrays


def well_folder(root: Path, grid: tuple[int, ...]) -> dict[str, list[dict]]:
    """``root/data/{train,valid,test}``: train in two files (2 + 1 trajectories), one each in valid and test."""
    layout = {"train": [2, 1], "valid": [1], "test": [1]}
    return {
        split: [well_file(root / "data" / split / f"toy_{k}.hdf5", n, grid, 10 * i + k) for k, n in enumerate(counts)]
        for i, (split, counts) in enumerate(layout.items())
    }


def test_2d_non_square_file_reads_bit_exact_with_the_wells_channel_names(tmp_path: Path) -> None:
    grid = (16, 24)
    arrays = well_file(tmp_path / "a.hdf5", 2, grid, 0)
    trajs = list(read_well(tmp_path / "a.hdf5", "toy_well"))
    assert [t.index for t in trajs] == [0, 1]
    t = trajs[1]
    assert t.channels == [
        "density",
        "velocity_x",
        "velocity_y",
        "stress_xx",
        "stress_xy",
        "stress_yx",
        "stress_yy",
        "viscosity",
        "Re",
        "forcing",
        "boundary_wall",
    ]
    assert t.predicted == 7 and t.data.shape == (T, *grid, 11) and t.grid == grid
    c = {name: i for i, name in enumerate(t.channels)}
    np.testing.assert_array_equal(t.data[..., c["density"]], arrays["density"][1])
    np.testing.assert_array_equal(t.data[..., c["velocity_y"]], arrays["velocity"][1, ..., 1])
    np.testing.assert_array_equal(t.data[..., c["stress_xy"]], arrays["stress"][1, ..., 0, 1])
    np.testing.assert_array_equal(t.data[..., c["stress_yx"]], arrays["stress"][1, ..., 1, 0])
    for k in range(T):  # the time-invariant field and the scalars repeat on every frame
        np.testing.assert_array_equal(t.data[k, ..., c["viscosity"]], arrays["viscosity"][1])
        assert (t.data[k, ..., c["forcing"]] == arrays["forcing"][k]).all()
    assert (t.data[..., c["Re"]] == 1000.0).all()
    wall = t.data[0, ..., c["boundary_wall"]]
    assert (wall[:, [0, -1]] == 1).all() and wall[:, 1:-1].sum() == 0  # the wall on y, nothing from periodic x
    assert t.dt == 0.25 and t.dx == pytest.approx(1 / 16) and t.dy == pytest.approx(1 / 24) and t.dz is None
    assert t.conditioning == {"Re": 1000.0}


def test_3d_orders_and_a_field_constant_along_an_axis(tmp_path: Path) -> None:
    grid = (4, 6, 8)
    path = tmp_path / "b.hdf5"
    arrays = well_file(path, 1, grid, 1)
    plane = np.random.default_rng(2).standard_normal((1, T, 4, 6, 1)).astype(np.float32)
    with h5py.File(path, "a") as f:  # a field that does not vary along z: stored with a size-1 axis
        g = f["t0_fields"]
        g.attrs["field_names"] = np.array(["density", "viscosity", "tracer"], dtype=STR)
        _flags(g.create_dataset("tracer", data=plane), True, True, [True, True, False])
    (t,) = read_well(path, "toy_well")
    assert t.data.shape == (T, *grid, 1 + 1 + 3 + 9 + 1 + 2 + 1) and t.predicted == 14
    assert t.channels[:3] == ["density", "tracer", "velocity_x"]
    assert t.channels[5:14] == [f"stress_{a}{b}" for a in "xyz" for b in "xyz"]
    np.testing.assert_array_equal(t.data[..., t.channels.index("stress_zy")], arrays["stress"][0, ..., 2, 1])
    np.testing.assert_array_equal(t.data[..., 1], np.broadcast_to(plane[0], (T, 4, 6, 8)))
    assert t.dz == pytest.approx(1 / 8)


def test_folders_become_splits_and_conditioning_channels_stay_input_only(tmp_path: Path) -> None:
    arrays = well_folder(tmp_path / "toy_well", (8, 16))
    info = DatasetInfo(
        format="the_well", grid=(8, 16), channels=11, frames=T, train=0, test=0, weight=1, split="folders"
    )
    manifests = shard_dataset(
        "toy_well", tmp_path / "toy_well", tmp_path / "shards", extra={"toy_well": info}, progress=False
    )
    assert {s: m["count"] for s, m in manifests.items()} == {"train": 3, "valid": 1, "test": 1}
    assert manifests["train"]["predicted_channels"] == 7
    model = {"grid": [8, 16], "patch_size": 4, "width": 16, "heads": 2, "afno_blocks": 2, "t_in": 2, "channels": 12}
    cfg = parse_config(
        {
            "model": model,
            "data": {
                "root": str(tmp_path / "shards"),
                "datasets": [{"name": "toy_well"}],
                "custom": {"toy_well": info.model_dump()},
            },
            "train": {"steps": 1, "micro_batch_per_rank": 1},
        }
    )
    (src,) = open_sources(cfg, "train")
    roles = src.roles(12).tolist()
    assert roles == [PREDICTED] * 7 + [INPUT_ONLY] * 4 + [PADDED]
    assert src.scored == 7  # the conditioning channels are neither predicted nor scored
    third = list(iter_split(src))[2]  # train: file 0's two trajectories, then file 1's one, in file order
    np.testing.assert_array_equal(third.data[..., 0], arrays["train"][1]["density"][0])


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("order", "unknown field order 't3_fields'"),
        ("attribute", "missing attribute 'grid_type' of the root"),
        ("spherical", "grid_type 'spherical' is not supported"),
        ("field_attribute", "missing attribute 'time_varying' of /t1_fields/velocity"),
    ],
    ids=["unknown_order", "missing_root_attribute", "spherical", "missing_field_attribute"],
)
def test_bad_well_files_are_named_in_one_line(tmp_path: Path, breakage: str, message: str) -> None:
    path = tmp_path / "bad.hdf5"
    well_file(path, 1, (8, 8), 0, grid_type="spherical" if breakage == "spherical" else "cartesian")
    with h5py.File(path, "a") as f:
        if breakage == "order":
            f.create_group("t3_fields").attrs["field_names"] = np.array([], dtype=STR)
        elif breakage == "attribute":
            del f.attrs["grid_type"]
        elif breakage == "field_attribute":
            del f["t1_fields/velocity"].attrs["time_varying"]
    with pytest.raises(DataError) as err:
        list(read_well(path, "toy_well"))
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text
    with pytest.raises(DataError, match=message.split("'")[0]):
        inspect_well(path)


def test_a_3d_well_folder_shards_in_the_3d_layout_and_feeds_nestor_3d(tmp_path: Path) -> None:
    """A 3-D, non-cubic Well set (8 x 8 x 16) through the shard writer, the loader and a NESTOR-3D forward."""
    from suite_data import train_batches

    from nestor_ds.model import build_model

    grid = (8, 8, 16)
    well_folder(tmp_path / "toy3d", grid)
    info = DatasetInfo(format="the_well", grid=grid, channels=17, frames=T, train=0, test=0, weight=1, split="folders")
    manifests = shard_dataset("toy3d", tmp_path / "toy3d", tmp_path / "shards", extra={"toy3d": info}, progress=False)
    train = manifests["train"]
    assert train["space_dims"] == 3 and train["layout"] == "T X Y Z C" and train["shapes"] == [[T, *grid, 17]]
    assert train["predicted_channels"] == 1 + 3 + 9
    model = {"grid": list(grid), "patch_size": 4, "width": 16, "heads": 2, "afno_blocks": 2, "t_in": 2, "channels": 17}
    cfg = parse_config(
        {
            "model": model | {"moe": {"experts": 2, "top_k": 1}, "sub_moe": {"experts": 2, "top_k": 1}},
            "data": {"root": str(tmp_path / "shards"), "datasets": [{"name": "toy3d"}], "custom": {"toy3d": info}},
            "train": {"steps": 1, "micro_batch_per_rank": 2},
            "parallel": {"ep_size": 1},
        }
    )
    batch = next(train_batches(cfg))
    assert batch["x"].shape == (2, *grid, 2, 17) and batch["extent"].tolist() == [list(grid)] * 2
    assert batch["mask"][..., :13].all() and not batch["mask"][..., 13:].any()  # conditioning: not scored
    out = build_model(cfg.model, seed=0)(batch["x"])
    assert out.pred.shape == (2, *grid, 1, 17) and torch.isfinite(out.pred).all()


def test_a_boundary_over_several_axes_named_out_of_order_lands_on_its_points(tmp_path: Path) -> None:
    """An OPEN boundary whose mask spans (y, z, x) of a 4 x 6 x 8 grid: each mask point lands on its own (x, y, z)."""
    path = tmp_path / "c.hdf5"
    well_file(path, 1, (4, 6, 8), 3)
    yzx = np.zeros((6, 8, 4), dtype=bool)
    yzx[5, 7, 0] = yzx[1, 2, 3] = True
    with h5py.File(path, "a") as f:
        g = f["boundary_conditions"].create_group("yzx_open")
        g.attrs["associated_dims"] = np.array(["y", "z", "x"], dtype=STR)
        g.attrs["bc_type"] = "OPEN"
        g.create_dataset("mask", data=yzx)
    (t,) = read_well(path, "toy_well")
    open_ = t.data[0, ..., t.channels.index("boundary_open")]  # [X, Y, Z]
    assert open_.sum() == 2 and open_[0, 5, 7] == 1 and open_[3, 1, 2] == 1
