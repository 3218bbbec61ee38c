"""Files laid out exactly as the original projects' writers lay them out (raw h5py/numpy here, not our
writers), sharded under the published split: values bit-exact, channels in DPOT's order, CFDBench masks as
its loader derives them, splits and registry counts as published."""

from __future__ import annotations

import json
import random
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nestor_ds.config.datasets import REGISTRY
from nestor_ds.data.convert import shard_dataset
from nestor_ds.data.shards import decode_sample, iter_raw_samples, read_manifest
from nestor_ds.data.splits import plan_splits


def rand(*shape: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def shard_data(folder: Path) -> list[np.ndarray]:
    manifest = read_manifest(folder)
    return [
        decode_sample(raw, manifest["channels"]).data
        for s in manifest["shards"]
        for raw in iter_raw_samples(folder / s["name"])
    ]


# ---------------------------------------------------------------- PDEArena: a folder of per-split files


def write_pdearena_like_pdearena(folder: Path, mode: str, seed: int, buoyancy: float, n: int) -> dict:
    """As pdedatagen/navier_stokes.py: one group named after the split, float64, everything per trajectory."""
    name = f"NavierStokes2D_{mode}_{seed}_{buoyancy:.5f}" + (f"_{n}" if mode == "train" else "")
    fields = {k: rand(n, 5, 6, 6, seed=seed * 10 + i, dtype=np.float64) for i, k in enumerate(("u", "vx", "vy"))}
    with h5py.File(folder / f"{name}.h5", "a") as f:
        g = f.create_group(mode)
        for key, arr in fields.items():
            g.create_dataset(key, (n, 5, 6, 6), dtype=float)[...] = arr
        g.create_dataset("t", (n, 5), dtype=float)[...] = np.linspace(18, 102, 5)
        g.create_dataset("x", (n, 6), dtype=float)[...] = np.linspace(0, 32, 6)
        g.create_dataset("y", (n, 6), dtype=float)[...] = np.linspace(0, 32, 6)
        for key, value in (("dt", 21.0), ("dx", 0.25), ("dy", 0.25), ("buo_y", buoyancy)):
            g.create_dataset(key, (n,), dtype=float)[...] = value
    return fields


def test_pdearena_folder_valid_folded_into_train(tmp_path: Path) -> None:
    release = tmp_path / "NavierStokes-2D"
    release.mkdir()
    train = write_pdearena_like_pdearena(release, "train", 1, 0.5, 3)
    valid = write_pdearena_like_pdearena(release, "valid", 2, 0.5, 2)
    test = write_pdearena_like_pdearena(release, "test", 3, 0.5, 2)
    shard_dataset("ns2d_pda", release, tmp_path / "shards", per_shard=2, progress=False)
    got_train, got_test = shard_data(tmp_path / "shards/ns2d_pda/train"), shard_data(tmp_path / "shards/ns2d_pda/test")
    want = [
        np.stack([part[k][i] for k in ("u", "vx", "vy")], -1).astype(np.float32)
        for part in (train, valid)
        for i in range(len(part["u"]))
    ]
    assert len(got_train) == 5 and all(np.array_equal(a, b) for a, b in zip(got_train, want))
    assert len(got_test) == 2 and np.array_equal(got_test[1][..., 2], test["vy"][1].astype(np.float32))
    assert read_manifest(tmp_path / "shards/ns2d_pda/train")["channels"] == ["u", "vx", "vy"]
    # a glob works the same; valid can be kept apart
    shard_dataset("ns2d_pda", str(release / "*.h5"), tmp_path / "sep", per_shard=2, valid="separate", progress=False)
    assert [read_manifest(tmp_path / "sep/ns2d_pda" / s)["count"] for s in ("train", "valid", "test")] == [3, 2, 2]


def test_pdearena_folder_without_files_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no PDEArena files found"):
        shard_dataset("ns2d_pda", tmp_path / "empty", tmp_path / "out", progress=False)
    (tmp_path / "odd").mkdir()
    with h5py.File(tmp_path / "odd" / "NavierStokes2D_misc.h5", "w") as f:
        f["train/u"] = np.zeros((1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"NavierStokes2D_misc\.h5: file name names no split"):
        shard_dataset("ns2d_pda", tmp_path / "odd", tmp_path / "out", progress=False)


# ---------------------------------------------------------------- CFDBench: the release tree, no mask file


def cfdbench_loader_features(case_dir: Path, problem: str) -> np.ndarray:
    """CFDBench's load_case_data (2023, as DPOT copied it), written out loop by loop: [T, 3, h, w]."""
    case = json.loads((case_dir / "case.json").read_text())
    u, v = np.load(case_dir / "u.npy"), np.load(case_dir / "v.npy")
    mask = np.ones_like(u)
    if problem == "cavity":
        return np.stack([u, v, mask], axis=1)
    if problem == "cylinder":
        height, width = case["y_max"] - case["y_min"], case["x_max"] - case["x_min"]
        dx, dy = width / u.shape[2], height / u.shape[1]
        for i in range(u.shape[1]):
            for j in range(u.shape[2]):
                x, y = case["x_min"] + j * dx, case["y_min"] + i * dy
                if (x - 0.5) ** 2 + (y - 0.5) ** 2 <= case["radius"] ** 2:
                    mask[:, i, j] = 0
    u = np.pad(u, ((0, 0), (0, 0), (1, 0)), mode="constant", constant_values=case["vel_in"])
    v = np.pad(v, ((0, 0), (0, 0), (1, 0)), mode="constant", constant_values=0)
    mask = np.pad(mask, ((0, 0), (0, 0), (1, 0)), mode="constant", constant_values=0)
    u = np.pad(u, ((0, 0), (1, 1), (0, 0)), mode="constant", constant_values=0)
    v = np.pad(v, ((0, 0), (1, 1), (0, 0)), mode="constant", constant_values=0)
    mask = np.pad(mask, ((0, 0), (1, 1), (0, 0)), mode="constant", constant_values=0)
    return np.stack([u, v, mask], axis=1)


def dpot_split_trajectory(x: np.ndarray, steps: int = 20, size: int = 64) -> np.ndarray:
    """DPOT preprocess.py's split_trajectory for one case, to [S, steps, size, size, C]."""
    count = int(np.ceil(x.shape[0] / steps))
    padded = np.zeros((count * steps, *x.shape[1:]))
    padded[: x.shape[0]] = x
    if x.shape[0] % steps:
        padded[x.shape[0] :] = x[-1]
    padded = F.interpolate(torch.from_numpy(padded), size=(size, size), mode="bilinear", align_corners=True).numpy()
    return padded.reshape(count, steps, *padded.shape[1:]).transpose(0, 1, 3, 4, 2)


def test_cfdbench_release_tree(tmp_path: Path) -> None:
    root = tmp_path / "cfdbench"
    cases = {
        "cavity": ("prop", 7, lambda k: {"vel_top": 1.0 + k, "density": 1, "viscosity": 1e-3, "height": 1, "width": 1}),
        "cylinder": (
            "geo",
            6,
            lambda k: {
                "vel_in": 0.1 * (k + 1),
                "density": 1000,
                "viscosity": 0.01,
                "radius": 0.1 + 0.02 * k,
                "x_min": -0.4,
                "x_max": 1.6,
                "y_min": 0.1,
                "y_max": 0.9,
            },
        ),
        "tube": ("bc", 5, lambda k: {"vel_in": 0.5 + k, "density": 1, "viscosity": 1e-3, "height": 0.1, "width": 1.0}),
        "dam": ("prop", 2, lambda k: {"velocity": 1.0, "barrier_width": 0.1, "barrier_height": 0.1}),
    }
    for problem, (subset, n, params) in cases.items():
        for k in range(n):
            d = root / problem / subset / f"case{k:04d}"
            d.mkdir(parents=True)
            np.save(d / "u.npy", rand(23, 9, 12, seed=k))
            np.save(d / "v.npy", rand(23, 9, 12, seed=100 + k))
            (d / "case.json").write_text(json.dumps(params(k)))
    shard_dataset("cfdbench", root, tmp_path / "shards", per_shard=3, progress=False)
    want: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for problem in ("cavity", "cylinder", "tube"):  # DPOT: no dam, no dev
        subset, n, _ = cases[problem]
        dirs = [root / problem / subset / f"case{k:04d}" for k in range(n)]
        random.seed(0)
        random.shuffle(dirs)
        cut = round if problem == "cavity" else int
        n_train, n_dev = cut(n * 0.8), cut(n * 0.1)
        for split, part in (("train", dirs[:n_train]), ("test", dirs[n_train + n_dev :])):
            for d in part:
                want[split] += list(dpot_split_trajectory(cfdbench_loader_features(d, problem)).astype(np.float32))
    for split in ("train", "test"):
        got = shard_data(tmp_path / "shards" / "cfdbench" / split)
        assert len(got) == len(want[split])
        for a, b in zip(got, want[split]):
            np.testing.assert_array_equal(a, b)
    assert len(want["train"]) == 2 * (6 + 4 + 4)  # 23 frames -> 2 segments; 7 -> 6/0/1, 6 -> 4/0/2, 5 -> 4/0/1
    # the cylinder mask really has the disc: the loader's mask is 0 inside it and on the padded border
    feats = cfdbench_loader_features(root / "cylinder/geo/case0005", "cylinder")
    assert 0 < (feats[0, 2, 1:-1, 1:] == 0).sum() < 9 * 12


# ---------------------------------------------------------------- PDEBench files


def test_pdebench_cfd_archive_file_attrs_and_dpot_order(tmp_path: Path) -> None:
    path = tmp_path / "164691"  # DaRUS serves the files under numeric ids: the name says nothing
    fields = {k: rand(10, 4, 6, 6, seed=i) for i, k in enumerate(("density", "pressure", "Vx", "Vy"))}
    with h5py.File(path, "w") as f:  # as PDEBench's Data_Merge.py
        for key, arr in fields.items():
            f.create_dataset(key, data=arr)
        f.create_dataset("x-coordinate", data=np.linspace(0, 1, 6))
        f.create_dataset("y-coordinate", data=np.linspace(0, 1, 6))
        f.create_dataset("t-coordinate", data=np.linspace(0, 1, 5))
        f.attrs["eta"], f.attrs["zeta"], f.attrs["M"] = 0.1, 0.1, 1.0
    shard_dataset("ns2d_pdb_M1_eta1e-1_zeta1e-1", path, tmp_path / "s", per_shard=4, progress=False)
    folder = tmp_path / "s" / "ns2d_pdb_M1_eta1e-1_zeta1e-1"
    train, test = shard_data(folder / "train"), shard_data(folder / "test")
    assert len(train) == 9 and len(test) == 1  # int(9/10 * N) train, the rest test
    want = np.stack([fields[k][9] for k in ("Vx", "Vy", "density", "pressure")], -1)
    np.testing.assert_array_equal(test[0], want)
    manifest = read_manifest(folder / "test")
    assert manifest["channels"] == ["Vx", "Vy", "density", "pressure"]
    raw = next(iter_raw_samples(folder / "test" / manifest["shards"][0]["name"]))
    assert json.loads(raw["meta.json"])["conditioning"] == {"mach": 1.0, "eta": 0.1, "zeta": 0.1}


@pytest.mark.parametrize("compression", ["lzf", "gzip"])
def test_pdebench_grouped_groups_out_of_order_and_compressed(tmp_path: Path, compression: str) -> None:
    path = tmp_path / "2D_diff-react_NA_NA.h5"
    arrays = {i: rand(6, 5, 5, 2, seed=i) for i in range(10)}
    with h5py.File(path, "w") as f:  # parallel workers append groups in completion order
        for i in (3, 0, 9, 1, 2, 8, 4, 7, 5, 6):
            f.create_dataset(f"{i:04d}/data", data=arrays[i], dtype="float32", compression=compression)
            for axis, n in (("x", 5), ("y", 5), ("t", 6)):
                f.create_dataset(
                    f"{i:04d}/grid/{axis}", data=np.linspace(0, 1, n), dtype="float32", compression=compression
                )
            f[f"{i:04d}"].attrs["config"] = "sim:\n  seed: %d\n" % i
    shard_dataset("dr_pdb", path, tmp_path / "s", per_shard=4, progress=False)
    train, test = shard_data(tmp_path / "s/dr_pdb/train"), shard_data(tmp_path / "s/dr_pdb/test")
    assert len(train) == 9 and all(np.array_equal(train[i], arrays[i]) for i in range(9))
    assert len(test) == 1 and np.array_equal(test[0], arrays[9])  # DPOT: groups 0..899 train, 900..999 test


# ---------------------------------------------------------------- FNO v7.3 and the registry's counts


def write_matlab_v73(path: Path, u_matlab: np.ndarray) -> None:
    """What MATLAB's save -v7.3 leaves: HDF5 behind a 512-byte user block, arrays with reversed axes."""
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("u", data=np.ascontiguousarray(u_matlab.T))
        f.create_dataset("a", data=np.ascontiguousarray(u_matlab[..., 0].T))
        f.create_dataset("t", data=np.arange(1, u_matlab.shape[-1] + 1, dtype=np.float64).reshape(-1, 1))
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116) + b"\x00" * 8 + b"\x00\x02IM")


def test_fno_v73_last_200_are_test(tmp_path: Path) -> None:
    u = rand(205, 4, 3, 5)  # MATLAB u[N, X, Y, T]
    write_matlab_v73(tmp_path / "ns.mat", u)
    shard_dataset("ns2d_fno_1e-5", tmp_path / "ns.mat", tmp_path / "s", per_shard=64, progress=False)
    train, test = shard_data(tmp_path / "s/ns2d_fno_1e-5/train"), shard_data(tmp_path / "s/ns2d_fno_1e-5/test")
    assert len(train) == 5 and len(test) == 200
    np.testing.assert_array_equal(train[4][..., 0], np.moveaxis(u[4], -1, 0))
    np.testing.assert_array_equal(test[0][..., 0], np.moveaxis(u[5], -1, 0))
    with pytest.raises(ValueError, match=r"n150\.mat: holds 150 trajectories.*last 200 in test.*--test"):
        shard_dataset("ns2d_fno_1e-5", _fno_file(tmp_path, 150), tmp_path / "x", progress=False)


def _fno_file(tmp_path: Path, n: int) -> Path:
    write_matlab_v73(tmp_path / f"n{n}.mat", rand(n, 2, 2, 2))
    return tmp_path / f"n{n}.mat"


@pytest.mark.parametrize("name,n", [("ns2d_fno_1e-5", 1200), ("ns2d_fno_1e-4", 10000), ("ns2d_fno_1e-3", 5000)])
def test_registry_counts_are_what_the_real_fno_files_give(tmp_path: Path, name: str, n: int) -> None:
    plan = plan_splits(REGISTRY[name], "fno_mat", _fno_file(tmp_path, n))
    assert (len(plan["train"]), len(plan["test"])) == (REGISTRY[name].train, REGISTRY[name].test)
    assert [it.index for it in plan["test"]] == list(range(n - 200, n))


def test_registry_counts_for_pdebench_and_pdearena_sizes(tmp_path: Path) -> None:
    path = tmp_path / "cns.h5"
    with h5py.File(path, "w") as f:
        for key in ("density", "pressure", "Vx", "Vy"):
            f.create_dataset(key, shape=(10000, 2, 1, 1), dtype="f4")
    plan = plan_splits(REGISTRY["ns2d_pdb_M1_eta1e-1_zeta1e-1"], "pdebench_cfd", path)
    assert (len(plan["train"]), len(plan["test"])) == (9000, 1000)
    grouped = tmp_path / "2D_rdb_NA_NA.h5"
    with h5py.File(grouped, "w") as f:
        for i in range(1000):
            f.create_group(f"{i:04d}")
    plan = plan_splits(REGISTRY["swe_pdb"], "pdebench_grouped", grouped)
    assert [it.index for it in plan["test"]] == list(range(900, 1000))
    release = tmp_path / "pda"
    release.mkdir()
    for mode, n in (("train", 5200), ("valid", 1300), ("test", 1300)):  # PDEArena NavierStokes-2D sizes
        with h5py.File(release / f"NavierStokes2D_{mode}_0_0.50000{'_5200' if mode == 'train' else ''}.h5", "w") as f:
            f.create_group(mode).create_dataset("u", shape=(n, 1, 1, 1), dtype=float)
    plan = plan_splits(REGISTRY["ns2d_pda"], "pdearena_ns", release)
    assert (len(plan["train"]), len(plan["test"])) == (REGISTRY["ns2d_pda"].train, REGISTRY["ns2d_pda"].test)


def test_pdebench_turbulence_512_file_as_nestor_splits_it(tmp_path: Path) -> None:
    """PDEBench's 2D_CFD_Turb file (here 10 trajectories at 8^2 in its layout): NESTOR's downstream set
    ns2d_pdb_M1e-1_eta1e-8_zeta1e-8_turb_512, DPOT's channel order, the first int(0.9 N) train; a missing key is
    one line naming the file and the key."""
    path = tmp_path / "2D_CFD_Turb_M0.1_Eta1e-08_Zeta1e-08_periodic_512_Train.hdf5"
    fields = {k: rand(10, 5, 8, 8, seed=i) for i, k in enumerate(("Vx", "Vy", "density", "pressure"))}
    with h5py.File(path, "w") as f:
        for key, arr in fields.items():
            f.create_dataset(key, data=arr)
        for axis, n in (("x", 8), ("y", 8), ("t", 5)):
            f.create_dataset(f"{axis}-coordinate", data=np.linspace(0, 1, n))
    name = "ns2d_pdb_M1e-1_eta1e-8_zeta1e-8_turb_512"
    info = REGISTRY[name]
    assert info.grid == (512, 512) and (info.train, info.test, info.dpot_test, info.rollout) == (900, 100, 20, 11)
    shard_dataset(name, path, tmp_path / "s", per_shard=4, progress=False)
    train, test = shard_data(tmp_path / "s" / name / "train"), shard_data(tmp_path / "s" / name / "test")
    assert len(train) == 9 and len(test) == 1
    np.testing.assert_array_equal(train[3], np.stack([fields[k][3] for k in fields], -1))
    raw = next(
        iter_raw_samples(
            tmp_path / "s" / name / "test" / read_manifest(tmp_path / "s" / name / "test")["shards"][0]["name"]
        )
    )
    assert json.loads(raw["meta.json"])["conditioning"] == {"mach": 0.1, "eta": 1e-8, "zeta": 1e-8}
    with h5py.File(path, "a") as f:
        del f["Vy"]
    with pytest.raises(Exception) as err:
        shard_dataset(name, path, tmp_path / "s2", per_shard=4, progress=False)
    assert str(path) in str(err.value) and "'Vy'" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "s2" / name).exists()  # nothing half-written is left named as a data set
