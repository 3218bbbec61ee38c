"""The generate -> shard path a user runs, through the CLI, on every data set of the small suite."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nestor_ds.data.formats import open_source
from nestor_ds.data.shards import read_manifest

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "nestor_ds", *args], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_generate_then_shard_every_layout(tmp_path: Path) -> None:
    raw, shards = tmp_path / "raw", tmp_path / "shards"
    _cli("data", "generate", "--suite", "small", "--out", str(raw), "--trajectories", "5", "--resolution", "16",
         "--frames", "6", "--seed", "1")
    index = json.loads((raw / "sources.json").read_text())
    assert {e["format"] for e in index.values()} == {"fno_mat", "pdebench_grouped", "pdebench_cfd", "pdearena_ns",
                                                     "cfdbench"}
    for name, entry in index.items():  # each source really is in its original layout
        first = next(open_source(entry["path"], entry["format"], name, split="train" if entry["format"] ==
                                 "pdearena_ns" else None))
        assert first.data.shape[1:3] == (16, 16) and first.data.shape[0] >= 5
    out = _cli("data", "shard", "--from-suite", str(raw), "--out", str(shards), "--per-shard", "2",
               "--test-every", "3")
    assert "ns2d_pda: train" in out.stdout
    for name in index:
        train, test = read_manifest(shards / name / "train"), read_manifest(shards / name / "test")
        assert train["count"] + test["count"] == 5 and test["count"] >= 1
        assert len(train["mean"]) == len(train["channels"]) and all(s > 0 for s in train["std"])
    cfd = read_manifest(shards / "ns2d_pdb_M1_eta1e-1_zeta1e-1" / "train")
    assert cfd["channels"] == ["density", "pressure", "Vx", "Vy"]


def test_shard_errors_are_named(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "nestor_ds", "data", "shard", "--dataset", "swe_pdb", "--source",
                          str(tmp_path / "missing.h5"), "--out", str(tmp_path)], cwd=REPO, capture_output=True,
                         text=True)
    assert out.returncode == 2 and "missing.h5" in out.stderr and "Traceback" not in out.stderr
