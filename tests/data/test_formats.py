"""Round trips through every original layout, streaming checks and error messages."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from nestor_ds.config.datasets import REGISTRY
from nestor_ds.data.formats import (
    READERS,
    open_source,
    parse_conditioning,
    read_cfdbench,
    read_fno_mat,
    read_pdearena_ns,
    read_pdebench_cfd,
    read_pdebench_grouped,
    write_cfdbench_case,
    write_fno_mat,
    write_pdearena_ns,
    write_pdebench_cfd,
    write_pdebench_grouped,
)

N, T, X, Y = 3, 5, 8, 6


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture
def h5_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record (dataset name, elements returned) of every h5py dataset read."""
    log: list[tuple[str, int]] = []
    orig = h5py.Dataset.__getitem__

    def spy(self: h5py.Dataset, args, *rest, **kw):  # type: ignore[no-untyped-def]
        out = orig(self, args, *rest, **kw)
        log.append((self.name, int(np.size(out))))
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    return log


def test_readers_cover_registry_formats() -> None:
    formats = {info.format for info in REGISTRY.values()} - {"shards"}
    assert formats <= set(READERS)


# ---------------------------------------------------------------- FNO .mat


@pytest.mark.parametrize("version", ["5", "7.3"])
def test_fno_round_trip(tmp_path: Path, version: str) -> None:
    u = rand(N, X, Y, T)  # MATLAB order, X != Y so a swapped axis shows
    t = np.arange(1, T + 1) * 0.25
    path = write_fno_mat(tmp_path / "ns.mat", u, t, version=version)
    trajs = list(read_fno_mat(path, "fno"))
    assert len(trajs) == N
    for i, tr in enumerate(trajs):
        assert tr.index == i and tr.dataset == "fno"
        assert tr.data.shape == (T, X, Y, 1) and tr.data.dtype == np.float32
        np.testing.assert_array_equal(tr.data[..., 0], np.moveaxis(u[i], -1, 0))
        assert tr.channels == ["vorticity"]
        assert (
            tr.dt == pytest.approx(0.25) and tr.dx == pytest.approx(1 / X) and tr.dy == pytest.approx(1 / Y)
        )  # unit square
        assert tr.conditioning == {} and tr.mask is None


def test_fno_v73_is_matlab_layout(tmp_path: Path) -> None:
    u = rand(N, X, Y, T)
    path = write_fno_mat(tmp_path / "ns.mat", u, version="7.3")
    head = path.read_bytes()[:128]
    assert head.startswith(b"MATLAB 7.3 MAT-file") and head[124:128] == b"\x00\x02IM"
    assert h5py.is_hdf5(path)
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512
        assert f["u"].shape == (T, Y, X, N)  # reversed MATLAB shape
        assert f["u"].attrs["MATLAB_class"] == b"single"
        np.testing.assert_array_equal(f["u"][2, 1, 3, 0], u[0, 3, 1, 2])


def test_fno_variants_agree(tmp_path: Path) -> None:
    u = rand(N, X, Y, T, seed=3)
    a = list(read_fno_mat(write_fno_mat(tmp_path / "v5.mat", u), "f"))
    b = list(read_fno_mat(write_fno_mat(tmp_path / "v73.mat", u, version="7.3"), "f"))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.data, y.data)
        assert x.meta() == y.meta()


def test_fno_v73_streams_one_trajectory(tmp_path: Path, h5_reads: list) -> None:
    u = rand(N, X, Y, T)
    path = write_fno_mat(tmp_path / "ns.mat", u, version="7.3")
    (tr,) = read_fno_mat(path, "f", indices=range(1, 2))
    assert tr.index == 1
    np.testing.assert_array_equal(tr.data[..., 0], np.moveaxis(u[1], -1, 0))
    big = [size for name, size in h5_reads if name == "/u"]
    assert big == [T * X * Y]


@pytest.mark.parametrize("version", ["5", "7.3"])
def test_fno_indices(tmp_path: Path, version: str) -> None:
    u = rand(N, X, Y, T)
    path = write_fno_mat(tmp_path / "ns.mat", u, version=version)
    assert [tr.index for tr in read_fno_mat(path, "f", indices=[2, 0])] == [2, 0]
    with pytest.raises(ValueError, match=r"ns\.mat.*index 3 out of range.*3 trajectories"):
        read_fno_mat(path, "f", indices=range(2, 4))


@pytest.mark.parametrize("version", ["5", "7.3"])
def test_fno_missing_u(tmp_path: Path, version: str) -> None:
    path = tmp_path / "bad.mat"
    if version == "5":
        import scipy.io

        scipy.io.savemat(path, {"a": rand(2, 4, 4), "t": np.arange(3.0)})
    else:
        with h5py.File(path, "w", userblock_size=512) as f:
            f["a"] = rand(4, 4, 2)
            f["t"] = np.arange(3.0)
    with pytest.raises(ValueError, match=r"bad\.mat: missing key 'u'"):
        read_fno_mat(path, "f")


def test_fno_not_a_mat_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.mat"
    path.write_bytes(b"definitely not matlab" * 20)
    with pytest.raises(ValueError, match=r"junk\.mat: not a MATLAB \.mat file"):
        read_fno_mat(path, "f")


# ---------------------------------------------------------------- PDEBench CFD


def test_pdebench_cfd_round_trip(tmp_path: Path) -> None:
    fields = [rand(N, T, X, Y, seed=s) for s in range(4)]
    t = np.linspace(0, 1, T + 1)
    x = np.linspace(-1, 1, X, endpoint=False)
    y = np.linspace(-1, 1, Y, endpoint=False)
    path = write_pdebench_cfd(tmp_path / "2D_CFD_Rand_M1.0_Eta0.1_Zeta0.01_periodic_128_Train.hdf5", *fields, t, x, y)
    trajs = list(read_pdebench_cfd(path, "cfd"))
    assert len(trajs) == N
    for i, tr in enumerate(trajs):
        assert tr.data.shape == (T, X, Y, 4)
        for c, field in enumerate((2, 3, 0, 1)):  # DPOT's order: Vx, Vy, density, pressure
            np.testing.assert_array_equal(tr.data[..., c], fields[field][i])
        assert tr.channels == ["Vx", "Vy", "density", "pressure"]
        assert tr.dt == pytest.approx(0.2) and tr.dx == pytest.approx(2 / X) and tr.dy == pytest.approx(2 / Y)
        assert tr.conditioning == {"mach": 1.0, "eta": 0.1, "zeta": 0.01}


def test_pdebench_cfd_streams_one_trajectory(tmp_path: Path, h5_reads: list) -> None:
    fields = [rand(N, T, X, Y, seed=s) for s in range(4)]
    path = write_pdebench_cfd(tmp_path / "plain.h5", *fields)
    (tr,) = read_pdebench_cfd(path, "cfd", indices=range(1, 2))
    assert tr.index == 1 and tr.conditioning == {}
    np.testing.assert_array_equal(tr.data[..., 1], fields[3][1])
    (as_file,) = read_pdebench_cfd(path, "cfd", indices=[1], channel_order="file")
    assert as_file.channels == ["density", "pressure", "Vx", "Vy"]
    np.testing.assert_array_equal(as_file.data[..., 3], fields[3][1])
    field_reads = [size for name, size in h5_reads if name.lstrip("/") in ("density", "pressure", "Vx", "Vy")]
    assert field_reads == [T * X * Y] * 8


def test_parse_conditioning() -> None:
    assert parse_conditioning("2D_CFD_Rand_M0.1_Eta1e-08_Zeta1e-08_periodic_512_Train.hdf5") == {
        "mach": 0.1,
        "eta": 1e-8,
        "zeta": 1e-8,
    }
    assert parse_conditioning("/d/2D_CFD_Turb_M1.0_Eta1e-08_Zeta1e-08_periodic_512_Train.hdf5")["mach"] == 1.0
    assert parse_conditioning("cfd_small.h5") == {}


def test_pdebench_cfd_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "cfd.h5"
    with h5py.File(path, "w") as f:
        for name in ("density", "pressure", "Vx"):
            f[name] = rand(1, 2, 3, 3)
    with pytest.raises(ValueError, match=r"cfd\.h5: missing key 'Vy'"):
        read_pdebench_cfd(path, "cfd")


# ---------------------------------------------------------------- PDEBench grouped


@pytest.mark.parametrize("channels,default", [(2, ["u", "v"]), (1, ["h"])])
def test_pdebench_grouped_round_trip(tmp_path: Path, channels: int, default: list[str]) -> None:
    arrays = [rand(T, X, Y, channels, seed=s) for s in range(N)]
    path = write_pdebench_grouped(
        tmp_path / "2D_diff-react_NA_NA.h5",
        arrays,
        t=np.linspace(0, 2, T),
        x=np.linspace(0, 1, X),
        y=np.linspace(0, 1, Y),
    )
    trajs = list(read_pdebench_grouped(path, "dr"))
    assert [tr.index for tr in trajs] == list(range(N))
    for arr, tr in zip(arrays, trajs, strict=True):
        np.testing.assert_array_equal(tr.data, arr)
        assert tr.channels == default
        assert (
            tr.dt == pytest.approx(0.5) and tr.dx == pytest.approx(1 / (X - 1)) and tr.dy == pytest.approx(1 / (Y - 1))
        )
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["0000", "0001", "0002"] and f["0001/grid/x"].shape == (X,)


def test_pdebench_grouped_channel_names_and_streaming(tmp_path: Path, h5_reads: list) -> None:
    arrays = [rand(T, X, Y, 3, seed=s) for s in range(N)]
    path = write_pdebench_grouped(tmp_path / "g.h5", arrays)
    with pytest.raises(ValueError, match=r"g\.h5: 3 channels.*pass channels="):
        read_pdebench_grouped(path, "g")
    h5_reads.clear()
    (tr,) = read_pdebench_grouped(path, "g", indices=range(1, 2), channels=["a", "b", "c"])
    assert tr.channels == ["a", "b", "c"] and tr.index == 1
    np.testing.assert_array_equal(tr.data, arrays[1])
    data_reads = {name for name, _ in h5_reads if name.endswith("/data")}
    assert data_reads == {"/0001/data"}


def test_pdebench_grouped_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        f.create_group("0000/grid")
        f["0000/grid/x"] = np.arange(4.0)
    with pytest.raises(ValueError, match=r"g\.h5: missing key '0000/data'"):
        read_pdebench_grouped(path, "g")


# ---------------------------------------------------------------- PDEArena NS


def test_pdearena_round_trip(tmp_path: Path) -> None:
    u, vx, vy = (rand(N, T, X, Y, seed=s) for s in range(3))
    buo = np.array([0.2, 0.3, 0.4])
    path = tmp_path / "NavierStokes2D_cond.h5"
    write_pdearena_ns(path, "train", u, vx, vy, buo_y=buo, t=np.linspace(0, 1.5, T))
    write_pdearena_ns(path, "test", u[:1], vx[:1], vy[:1], buo_y=0.5)
    trajs = list(read_pdearena_ns(path, "pda", split="train"))
    assert len(trajs) == N
    for i, tr in enumerate(trajs):
        assert tr.data.shape == (T, X, Y, 3) and tr.channels == ["u", "vx", "vy"]
        np.testing.assert_array_equal(tr.data, np.stack([u[i], vx[i], vy[i]], axis=-1))
        assert tr.dt == pytest.approx(1.5 / (T - 1)) and tr.dx == pytest.approx(1 / X) and tr.dy == pytest.approx(1 / Y)
        assert tr.conditioning == {"buoyancy": pytest.approx(buo[i])}
    (tst,) = read_pdearena_ns(path, "pda", split="test")
    assert tst.conditioning == {"buoyancy": 0.5}
    with h5py.File(path, "r") as f:
        assert f["train/t"].shape == (N, T) and f["train/buo_y"].shape == (N,) and f["train/dt"].shape == (N,)
    with pytest.raises(ValueError, match=r"pass split=.*'train', 'test'"):
        read_pdearena_ns(path, "pda")


def test_pdearena_single_split_and_streaming(tmp_path: Path, h5_reads: list) -> None:
    u, vx, vy = (rand(N, T, X, Y, seed=s) for s in range(3))
    path = write_pdearena_ns(tmp_path / "ns_valid.h5", "valid", u, vx, vy)
    h5_reads.clear()
    (tr,) = read_pdearena_ns(path, "pda", indices=range(1, 2))  # the one split is found without split=
    assert tr.index == 1 and tr.conditioning == {"buoyancy": 0.5}
    np.testing.assert_array_equal(tr.data[..., 1], vx[1])
    field_reads = [size for name, size in h5_reads if name.split("/")[-1] in ("u", "vx", "vy")]
    assert field_reads == [T * X * Y] * 3


def test_pdearena_missing_key_and_split(tmp_path: Path) -> None:
    u = rand(1, 2, 3, 3)
    path = tmp_path / "pda.h5"
    with h5py.File(path, "w") as f:
        f["train/u"] = u
        f["train/vx"] = u
        f["train/dt"] = np.ones(1)
    with pytest.raises(ValueError, match=r"pda\.h5: missing key 'train/vy'"):
        read_pdearena_ns(path, "pda", split="train")
    with pytest.raises(ValueError, match=r"pda\.h5: missing key 'valid'"):
        read_pdearena_ns(path, "pda", split="valid")


# ---------------------------------------------------------------- CFDBench


def test_cfdbench_cases_in_loader_order_with_problem_features(tmp_path: Path) -> None:
    cases = {
        "tube/bc/case0001": {"vel_in": 3.0, "density": 1.0, "viscosity": 1e-3, "height": 0.1, "width": 1.0},
        "cavity/geo/case0000": {"vel_top": 2.0, "density": 1.0, "viscosity": 1e-3, "height": 1, "width": 1},
        "cavity/prop/case0000": {"vel_top": 1.0, "density": 1.0, "viscosity": 1e-3, "height": 1, "width": 1},
        "cavity/prop/case0010": {"vel_top": 4.0, "density": 1.0, "viscosity": 1e-3, "height": 1, "width": 1},
        "cavity/prop/case0002": {"vel_top": 5.0, "density": 1.0, "viscosity": 1e-3, "height": 1, "width": 1},
    }
    for name, case in cases.items():
        write_cfdbench_case(tmp_path / name, rand(T, X, Y), rand(T, X, Y, seed=1), case)
    trajs = list(read_cfdbench(tmp_path, "cfdbench"))
    # problems cavity, cylinder, tube; subsets prop, bc, geo; cases by number (2 before 10)
    assert [tr.conditioning.get("vel_top", tr.conditioning.get("vel_in")) for tr in trajs] == [1, 5, 4, 2, 3]
    cavity, tube = trajs[0], trajs[-1]
    assert cavity.data.shape == (T, X, Y, 3) and cavity.channels == ["u", "v", "mask"] and cavity.mask is None
    assert (cavity.data[..., 2] == 1).all() and cavity.dt == pytest.approx(0.1)  # 0.1 s frames, no dt key exists
    assert tube.data.shape == (T, X + 2, Y + 1, 3)  # a row top and bottom, a column on the left
    assert (tube.data[:, 1:-1, 0, 0] == 3.0).all() and (tube.data[:, [0, -1], :, :2] == 0).all()
    assert (tube.data[:, 1:-1, 1:, 2] == 1).all() and tube.data[..., 2].sum() == T * X * Y
    (one,) = read_cfdbench(tmp_path, "cfdbench", indices=range(1, 2))
    assert one.index == 1 and one.conditioning["vel_top"] == 5.0


def test_cfdbench_missing_file(tmp_path: Path) -> None:
    d = tmp_path / "cavity" / "bc" / "case0000"
    d.mkdir(parents=True)
    np.save(d / "u.npy", rand(T, X, Y))
    (d / "case.json").write_text("{}")
    with pytest.raises(ValueError, match=r"case0000: missing file 'v\.npy'"):
        read_cfdbench(tmp_path, "cfdbench")
    with pytest.raises(ValueError, match=r"no CFDBench case found"):
        read_cfdbench(tmp_path / "cavity" / "bc", "cfdbench")


# ---------------------------------------------------------------- dispatch


def test_open_source_dispatch(tmp_path: Path) -> None:
    u = rand(N, X, Y, T)
    path = write_fno_mat(tmp_path / "ns.mat", u, version="7.3")
    trajs = list(open_source(path, "fno_mat", "ns2d_fno_1e-5", indices=range(2)))
    assert [tr.index for tr in trajs] == [0, 1] and trajs[0].dataset == "ns2d_fno_1e-5"


def test_open_source_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"x\.h5: unknown source format 'netcdf'"):
        open_source(tmp_path / "x.h5", "netcdf", "d")


def test_open_source_wrong_layout(tmp_path: Path) -> None:
    fields = [rand(1, 2, 4, 4, seed=s) for s in range(4)]
    path = write_pdebench_cfd(tmp_path / "cfd.h5", *fields)
    with pytest.raises(ValueError, match=r"cfd\.h5: missing key 'u' of the fno_mat layout"):
        open_source(path, "fno_mat", "d")
    with pytest.raises(ValueError, match=r"cfd\.h5: no trajectory groups .* not the pdebench_grouped layout"):
        open_source(path, "pdebench_grouped", "d")
    with pytest.raises(ValueError, match=r"cfd\.h5: no split group .* not the pdearena_ns layout"):
        open_source(path, "pdearena_ns", "d")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt: not an HDF5 file, so not in the pdebench_cfd layout"):
        open_source(text, "pdebench_cfd", "d")
    with pytest.raises(ValueError, match=r"notes\.txt: not a directory.*cfdbench"):
        open_source(text, "cfdbench", "d")


def test_split_rejected_where_file_has_none(tmp_path: Path) -> None:
    path = write_pdebench_cfd(tmp_path / "cfd.h5", *[rand(1, 2, 4, 4, seed=s) for s in range(4)])
    with pytest.raises(ValueError, match=r"cfd\.h5: the pdebench_cfd layout keeps no splits"):
        open_source(path, "pdebench_cfd", "d", split="train")
