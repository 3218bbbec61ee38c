"""PDEBench's 3-D CFD files: read as PDEBench's ``Data_Merge.py`` lays them out (raw h5py here, not our
writer), split and ordered as DPOT's ``preprocess.py`` does, sharded as [T, X, Y, Z, C] samples; bad input
named in one line."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from nestor_ds.config.datasets import REGISTRY
from nestor_ds.data.convert import shard_dataset
from nestor_ds.data.formats import open_source, read_pdebench_cfd3d, write_pdebench_cfd
from nestor_ds.data.shards import DataError, decode_sample, iter_raw_samples, read_manifest

N, T, X, Y, Z = 10, 6, 4, 5, 3


def _pdebench_3d_file(path: Path) -> dict[str, np.ndarray]:
    """A file exactly as PDEBench's Data_Merge.py writes a 3-D CFD set: five [N, T, X, Y, Z] float32 fields,
    coordinates (t has T + 1 entries) and the eta / zeta / M attributes."""
    rng = np.random.default_rng(0)
    fields = {k: rng.standard_normal((N, T, X, Y, Z)).astype(np.float32) for k in ("density", "pressure", "Vx")}
    fields |= {k: rng.standard_normal((N, T, X, Y, Z)).astype(np.float32) for k in ("Vy", "Vz")}
    with h5py.File(path, "w") as f:
        f.create_dataset("density", data=fields["density"])
        f.create_dataset("pressure", data=fields["pressure"])
        f.create_dataset("Vx", data=fields["Vx"])
        f.create_dataset("Vy", data=fields["Vy"])
        f.create_dataset("y-coordinate", data=np.linspace(0, 1, Y, dtype=np.float32))
        f.create_dataset("Vz", data=fields["Vz"])
        f.create_dataset("z-coordinate", data=np.linspace(0, 1, Z, dtype=np.float32))
        f.create_dataset("x-coordinate", data=np.linspace(0, 1, X, dtype=np.float32))
        f.create_dataset("t-coordinate", data=np.linspace(0, 1, T + 1, dtype=np.float32))
        f.attrs["eta"], f.attrs["zeta"], f.attrs["M"] = 1e-8, 1e-8, 1.0
    return fields


def test_reader_gives_dpot_channel_order_and_grid_steps(tmp_path: Path) -> None:
    path = tmp_path / "3D_CFD_Rand_M1.0_Eta1e-08_Zeta1e-08_periodic_Train.hdf5"
    fields = _pdebench_3d_file(path)
    trajs = list(read_pdebench_cfd3d(path, "ns3d_pdb_M1_rand", indices=[0, 7]))
    assert [t.index for t in trajs] == [0, 7]
    t = trajs[1]
    assert t.data.shape == (T, X, Y, Z, 5) and t.grid == (X, Y, Z)
    assert t.channels == ["Vx", "Vy", "Vz", "pressure", "density"]  # DPOT's 3-D order, not its 2-D one
    for c, name in enumerate(t.channels):
        np.testing.assert_array_equal(t.data[..., c], fields[name][7])  # bit-exact
    assert t.dx == pytest.approx(1 / (X - 1)) and t.dz == pytest.approx(1 / (Z - 1)) and t.dt == pytest.approx(1 / T)
    assert t.conditioning == {"mach": 1.0, "eta": 1e-8, "zeta": 1e-8}
    (own,) = read_pdebench_cfd3d(path, "x", indices=[3], channel_order="file")
    assert own.channels == ["density", "pressure", "Vx", "Vy", "Vz"]


def test_shards_keep_the_published_split_and_say_3d(tmp_path: Path) -> None:
    path = tmp_path / "3D_CFD_Rand_M1.0_Eta1e-08_Zeta1e-08_periodic_Train.hdf5"
    fields = _pdebench_3d_file(path)
    assert REGISTRY["ns3d_pdb_M1_rand"].split == "fraction"  # DPOT: the first int(0.9 N) train, the rest test
    shard_dataset("ns3d_pdb_M1_rand", path, tmp_path / "shards", fmt="pdebench_cfd3d", per_shard=4, progress=False)
    train, test = (read_manifest(tmp_path / "shards" / "ns3d_pdb_M1_rand" / s) for s in ("train", "test"))
    assert (train["count"], test["count"]) == (9, 1)
    assert train["space_dims"] == 3 and train["layout"] == "T X Y Z C" and train["shapes"] == [[T, X, Y, Z, 5]]
    shard = tmp_path / "shards" / "ns3d_pdb_M1_rand" / "test" / test["shards"][0]["name"]
    (only,) = [decode_sample(raw, test["channels"]) for raw in iter_raw_samples(shard)]
    assert only.index == 0 and only.dz is not None
    np.testing.assert_array_equal(only.data[..., 4], fields["density"][9])  # the file's last trajectory


def test_a_2d_file_given_to_the_3d_reader_is_named(tmp_path: Path) -> None:
    flat = np.zeros((2, 3, 4, 4), dtype=np.float32)
    path = write_pdebench_cfd(tmp_path / "2D_CFD_Rand_M1.0_Eta0.1_Zeta0.1_periodic_128_Train.hdf5", *(flat,) * 4)
    with pytest.raises(DataError) as err:
        open_source(path, "pdebench_cfd3d", "ns3d_pdb_M1_rand")
    message = str(err.value)
    assert str(path) in message and "2-D fields" in message and "[N, T, X, Y, Z]" in message and "\n" not in message


def test_a_truncated_3d_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "3D_CFD_Rand_M1.0_Eta1e-08_Zeta1e-08_periodic_Train.hdf5"
    _pdebench_3d_file(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a download cut short
    with pytest.raises(DataError) as err:
        list(open_source(path, "pdebench_cfd3d", "ns3d_pdb_M1_rand"))
    message = str(err.value)
    assert str(path) in message and ("truncated" in message or "corrupt" in message) and "\n" not in message
