"""The generate -> shard path a user runs, through the CLI, on every data set of the small suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nestor_ds.data.formats import open_source
from nestor_ds.data.shards import iter_raw_samples, read_manifest

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nestor_ds", *args], cwd=REPO, capture_output=True, text=True)


def _cli(*args: str) -> subprocess.CompletedProcess:
    out = _run(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_generate_then_shard_every_layout(tmp_path: Path) -> None:
    raw, shards = tmp_path / "raw", tmp_path / "shards"
    _cli(
        "data",
        "generate",
        "--suite",
        "small",
        "--out",
        str(raw),
        "--trajectories",
        "5",
        "--resolution",
        "16",
        "--frames",
        "6",
        "--seed",
        "1",
    )
    index = json.loads((raw / "sources.json").read_text())
    assert {e["format"] for e in index.values()} == {
        "fno_mat",
        "pdebench_grouped",
        "pdebench_cfd",
        "pdearena_ns",
        "cfdbench",
    }
    for name, entry in index.items():  # each source really is in its original layout
        first = next(
            open_source(
                entry["path"], entry["format"], name, split="train" if entry["format"] == "pdearena_ns" else None
            )
        )
        assert first.data.shape[1:3] == (16, 16) and first.data.shape[0] >= 5
    out = _cli("data", "shard", "--from-suite", str(raw), "--out", str(shards), "--shard-size", "7kB", "--workers", "2")
    assert "ns2d_pda: train" in out.stdout
    for name, entry in index.items():
        train, test = read_manifest(shards / name / "train"), read_manifest(shards / name / "test")
        if entry["test"] is not None:  # single files: the small suite's 25 % tail
            assert (train["count"], test["count"]) == (3, 2)
        assert len(train["mean"]) == len(train["channels"]) and all(s > 0 for s in train["std"][:2])
        assert train["conversion"]["format"] == entry["format"]
    # PDEArena: 3 train + 1 valid file trajectory fold into train, as DPOT; 1 test
    assert [read_manifest(shards / "ns2d_pda" / s)["count"] for s in ("train", "test")] == [4, 1]
    # CFDBench: cavity 3 cases -> 2/0/1 (rounded), cylinder 2 -> 1/0/1 (truncated); 40 frames = 2 segments
    cfdb = read_manifest(shards / "cfdbench" / "train")
    assert cfdb["count"] == 6 and cfdb["shapes"] == [[20, 64, 64, 3]]  # DPOT resizes the segments to 64
    assert cfdb["channels"] == ["u", "v", "mask"]
    assert read_manifest(shards / "cfdbench" / "test")["count"] == 4
    cfd = read_manifest(shards / "ns2d_pdb_M1_eta1e-1_zeta1e-1" / "train")
    assert cfd["channels"] == ["Vx", "Vy", "density", "pressure"]
    assert (
        len(read_manifest(shards / "ns2d_fno_1e-3" / "train")["shards"]) == 3
    )  # 16x16x6 floats = 6.1 kB: one per 7 kB shard
    # one worker writes the very same shards as two
    _cli("data", "shard", "--from-suite", str(raw), "--out", str(tmp_path / "one"), "--shard-size", "7kB")
    for name in index:
        for split in ("train", "test"):
            a, b = read_manifest(shards / name / split), read_manifest(tmp_path / "one" / name / split)
            assert [(s["name"], s["count"]) for s in a["shards"]] == [(s["name"], s["count"]) for s in b["shards"]]
            for shard in a["shards"]:  # tar headers carry mtimes; the samples themselves must be identical
                got = [(r["__key__"], r["data.npy"]) for r in iter_raw_samples(shards / name / split / shard["name"])]
                want = [
                    (r["__key__"], r["data.npy"])
                    for r in iter_raw_samples(tmp_path / "one" / name / split / shard["name"])
                ]
                assert got == want, (name, split, shard["name"])


def test_shard_errors_are_named(tmp_path: Path) -> None:
    out = _run(
        "data", "shard", "--dataset", "swe_pdb", "--source", str(tmp_path / "missing.h5"), "--out", str(tmp_path)
    )
    assert out.returncode == 2 and "missing.h5" in out.stderr and "Traceback" not in out.stderr


def test_downstream_suite_generates_and_shards(tmp_path: Path) -> None:
    """Wave-Gauss and Wave-Layer stand-ins in Poseidon's merged file, ERA5's in WeatherBench's folders: each
    shards under its split with the wave speed input only; a WeatherBench folder missing a variable is one line."""
    raw, shards = tmp_path / "raw", tmp_path / "shards"
    _cli("data", "generate", "--suite", "downstream", "--out", str(raw), "--trajectories", "12", "--resolution", "16")
    out = _cli("data", "shard", "--from-suite", str(raw), "--out", str(shards))
    assert "the first 1 predicted" in out.stdout
    wave = read_manifest(shards / "wave_gauss" / "test")
    assert wave["channels"] == ["u", "c"] and wave["predicted_channels"] == 1 and wave["count"] == 3
    assert read_manifest(shards / "wave_layer" / "train")["count"] == 8  # 12 - 3 test - 1 valid
    era5 = read_manifest(shards / "era5" / "train")
    assert era5["channels"] == ["z500", "t850", "u10", "v10"] and era5["count"] == 6  # 2013-2015, 2 windows each
    sample = next(
        iter_raw_samples(shards / "era5" / "test" / read_manifest(shards / "era5" / "test")["shards"][0]["name"])
    )
    assert json.loads(sample["meta.json"])["shape"] == [16, 16, 32, 4]
    for p in (raw / "era5" / "10m_u_component_of_wind").iterdir():
        p.unlink()
    bad = _run("data", "shard", "--dataset", "era5", "--source", str(raw / "era5"), "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "10m_u_component_of_wind" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
