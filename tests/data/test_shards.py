"""Shards: atomic writing, manifests, and bad input that is named (or skipped and counted), never silent."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from suite_data import train_batches
from test_loader import make_set, run_config, take

from nestor_ds.data.shards import DataError, encode_npy, read_manifest, write_shards
from nestor_ds.data.trajectory import Trajectory


def traj(i: int, value: float | None = None) -> Trajectory:
    data = np.random.default_rng(i).standard_normal((8, 8, 8, 1)).astype(np.float32)
    if value is not None:
        data[2, 3, 4, 0] = value
    return Trajectory("alpha", i, data, ["c0"], 0.1, 0.125, 0.125)


def test_manifest_counts_stats_and_checksums(tmp_path: Path) -> None:
    trajs = [traj(i) for i in range(5)]
    m = write_shards(trajs, tmp_path / "alpha", "alpha", "train", per_shard=2)
    assert m["count"] == 5 and [s["count"] for s in m["shards"]] == [2, 2, 1]
    assert m["shapes"] == [[8, 8, 8, 1]] and m["channels"] == ["c0"]
    stacked = np.stack([t.data for t in trajs])
    assert m["mean"][0] == pytest.approx(stacked.mean(), abs=1e-6)
    assert m["std"][0] == pytest.approx(stacked.std(), rel=1e-5)
    assert read_manifest(tmp_path / "alpha" / "train") == m
    assert not list((tmp_path / "alpha").rglob("*.partial"))


def test_interrupted_writing_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    def crashing():
        for i in range(3):
            yield traj(i)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_shards(crashing(), tmp_path / "alpha", "alpha", "train", per_shard=2)
    assert list((tmp_path / "alpha").iterdir()) == []  # the staging is gone, nothing was switched in
    with pytest.raises(DataError, match="no manifest.json"):
        read_manifest(tmp_path / "alpha" / "train")


def test_rewriting_a_split_switches_at_the_end_and_a_failure_keeps_the_old_one(tmp_path: Path) -> None:
    old = write_shards([traj(i) for i in range(4)], tmp_path / "alpha", "alpha", "train", per_shard=2)
    folder = tmp_path / "alpha" / "train"
    stranger = tmp_path / "alpha" / ".train.writing-999-abcdef"  # another writer's unfinished work
    stranger.mkdir()
    (stranger / "shard-000000.tar.partial").write_bytes(b"x")

    def failing():
        yield traj(10)
        yield traj(11)
        yield traj(12, np.nan)  # refused: the writing stops with the new shards half done

    with pytest.raises(DataError, match="NaN or Inf"):
        write_shards(failing(), tmp_path / "alpha", "alpha", "train", per_shard=2)
    assert read_manifest(folder) == old  # the old split, whole and verified
    assert (stranger / "shard-000000.tar.partial").exists()  # not ours: left alone
    new = write_shards([traj(i) for i in range(20, 23)], tmp_path / "alpha", "alpha", "train", per_shard=2)
    assert read_manifest(folder) == new and new["count"] == 3
    assert sorted(p.name for p in (tmp_path / "alpha").iterdir()) == [".train.writing-999-abcdef", "train"]


def test_a_truncated_shard_is_named_at_start_by_its_size(tmp_path: Path) -> None:
    write_shards([traj(i) for i in range(4)], tmp_path / "alpha", "alpha", "train", per_shard=2)
    shard = tmp_path / "alpha" / "train" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:3000])  # truncated
    with pytest.raises(DataError, match=r"shard-000001.tar: 3000 bytes, .* says \d+ \(truncated shard\)"):
        read_manifest(tmp_path / "alpha" / "train")


def _flip_a_bit(shard: Path) -> None:
    """One bit of the first sample's array: the same size, still a readable tar with a decodable sample."""
    with tarfile.open(shard) as tar:
        offset = next(m.offset_data for m in tar if m.name.endswith(".data.npy")) + 200
    raw = bytearray(shard.read_bytes())
    raw[offset] ^= 0x10
    shard.write_bytes(bytes(raw))


def test_start_hashes_nothing_and_a_shard_is_checked_when_first_opened(tmp_path: Path) -> None:
    """Start-up reads manifests and sizes only; each shard is hashed by the process that opens it, before its
    samples are used, once; a flipped bit is named before any sample of that shard reaches a batch."""
    from nestor_ds.data.loader import open_sources
    from nestor_ds.data.shards import SHARD_CHECKS

    make_set(tmp_path, "alpha", 24, 8, 1, per_shard=1)  # 24 shards: trajectory i is shard i
    folder = tmp_path / "alpha" / "train"
    cfg = run_config(tmp_path, {"alpha": (8, 1, 1.0)}, batch=2, resolution=8, windows_per_trajectory=1)
    before = SHARD_CHECKS.bytes_hashed
    open_sources(cfg, "train")
    assert SHARD_CHECKS.bytes_hashed == before  # nothing hashed at start

    first = take(train_batches(cfg, 0, 1), 1)[0]
    used = sorted({int(i) for i in first["traj_index"]})
    size = {int(p.stem.split("-")[1]): p.stat().st_size for p in folder.glob("*.tar")}
    assert SHARD_CHECKS.bytes_hashed - before == sum(size[i] for i in used)  # exactly the shards trained on first

    batches = take(train_batches(cfg, 0, 1), 12)  # one epoch: every shard opened once more in this process...
    order = [int(i) for b in batches for i in b["traj_index"]]
    hashed = SHARD_CHECKS.bytes_hashed
    take(train_batches(cfg, 0, 1), 12)
    assert SHARD_CHECKS.bytes_hashed == hashed  # ...and trusted the second time

    SHARD_CHECKS.intact.clear()  # a new process
    victim = order[5]
    _flip_a_bit(folder / f"shard-{victim:06d}.tar")
    seen: list[int] = []
    with pytest.raises(DataError, match=rf"shard-{victim:06d}.tar: sha256 does not match its manifest"):
        for b in train_batches(cfg, 0, 1):
            seen += [int(i) for i in b["traj_index"]]
    assert victim not in seen and seen == order[: len(seen)] and len(seen) >= 4

    SHARD_CHECKS.intact.clear()
    skip = run_config(
        tmp_path, {"alpha": (8, 1, 1.0)}, batch=2, resolution=8, windows_per_trajectory=1, on_bad_sample="skip"
    )
    batches = take(train_batches(skip, 0, 1), 24)  # two epochs
    assert victim not in {int(i) for b in batches for i in b["traj_index"]}
    assert batches[-1]["skipped"].item() >= 1


def _rewrite_shard(path: Path, mutate) -> None:
    """Rewrite a shard's members through ``mutate(name, bytes) -> bytes | None`` (None drops it)."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for m, data in members:
            data = mutate(m.name, data)
            if data is not None:
                m.size = len(data)
                tar.addfile(m, io.BytesIO(data))


BAD = {
    "nan": (
        lambda n, d: encode_npy(np.full((8, 8, 8, 1), np.nan, np.float32)) if n == "00000001.data.npy" else d,
        "sample 00000001: NaN or Inf",
    ),
    "missing key": (lambda n, d: None if n == "00000001.meta.json" else d, "sample 00000001: missing meta.json"),
    "wrong shape": (
        lambda n, d: encode_npy(np.zeros((8, 4, 8, 1), np.float32)) if n == "00000001.data.npy" else d,
        "sample 00000001: data shape [8, 4, 8, 1] does not match meta shape",
    ),
    "corrupt npy": (lambda n, d: b"garbage" if n == "00000001.data.npy" else d, "sample 00000001: cannot decode"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_samples_raise_naming_shard_and_sample_or_are_skipped(tmp_path: Path, kind: str) -> None:
    make_set(tmp_path, "alpha", 4, 8, 1, per_shard=4)
    mutate, message = BAD[kind]
    _rewrite_shard(tmp_path / "alpha" / "train" / "shard-000000.tar", mutate)
    one = dict(batch=2, resolution=8, verify_checksums=False, windows_per_trajectory=1)  # reach sample 1 early
    cfg = run_config(tmp_path, {"alpha": (8, 1, 1.0)}, **one)
    with pytest.raises(DataError, match=re.escape(f"shard-000000.tar {message}")):
        take(train_batches(cfg, 0, 1), 3)
    skip = run_config(tmp_path, {"alpha": (8, 1, 1.0)}, **one, on_bad_sample="skip")
    batches = take(train_batches(skip, 0, 1), 3)
    assert batches[-1]["skipped"].item() >= 1
    assert 1 not in {int(i) for b in batches for i in b["traj_index"]}


def test_truncated_tar_is_named(tmp_path: Path) -> None:
    make_set(tmp_path, "alpha", 4, 8, 1, per_shard=4)
    shard = tmp_path / "alpha" / "train" / "shard-000000.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    cfg = run_config(
        tmp_path, {"alpha": (8, 1, 1.0)}, batch=2, resolution=8, verify_checksums=False, windows_per_trajectory=1
    )
    with pytest.raises(DataError, match="shard-000000.tar"):
        take(train_batches(cfg, 0, 1), 3)


def test_skip_mode_skips_the_rest_of_a_truncated_tar_and_goes_on(tmp_path: Path) -> None:
    make_set(tmp_path, "alpha", 4, 8, 1, per_shard=2)
    shard = tmp_path / "alpha" / "train" / "shard-000000.tar"
    shard.write_bytes(shard.read_bytes()[:5000])  # its first sample whole, then the tar ends
    cfg = run_config(
        tmp_path,
        {"alpha": (8, 1, 1.0)},
        batch=2,
        resolution=8,
        verify_checksums=False,
        windows_per_trajectory=1,
        on_bad_sample="skip",
    )
    batches = take(train_batches(cfg, 0, 1), 6)
    assert batches[-1]["skipped"].item() >= 2  # once per epoch: the shard is dealt again
    assert {int(i) for b in batches for i in b["traj_index"]} <= {0, 2, 3}  # 1 sits past the truncation


@pytest.mark.parametrize("count", [2, 8])
def test_skip_mode_stops_when_nothing_is_usable(tmp_path: Path, count: int) -> None:
    """Every shard truncated: a bounded number of failures (or an epoch with nothing usable), not an endless
    search; the error names the data set."""
    make_set(tmp_path, "alpha", count, 8, 1, per_shard=1)
    for shard in (tmp_path / "alpha" / "train").glob("*.tar"):
        shard.write_bytes(shard.read_bytes()[:700])
    cfg = run_config(
        tmp_path,
        {"alpha": (8, 1, 1.0)},
        batch=2,
        resolution=8,
        verify_checksums=False,
        windows_per_trajectory=1,
        on_bad_sample="skip",
        max_bad_samples=5,
    )
    expected = "not one usable sample in an epoch" if count < 5 else r"5 bad samples or shards in a row \(data.max"
    with pytest.raises(DataError, match=f"alpha: {expected}"):
        take(train_batches(cfg, 0, 1), 1)


def test_source_with_nan_is_refused_at_writing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="alpha/train trajectory 3: NaN or Inf"):
        write_shards([traj(3, np.inf)], tmp_path / "alpha", "alpha", "train")


def test_meta_json_round_trips(tmp_path: Path) -> None:
    t = traj(0)
    t.conditioning = {"buoyancy": 0.3}
    write_shards([t], tmp_path / "alpha", "alpha", "train")
    with tarfile.open(tmp_path / "alpha" / "train" / "shard-000000.tar") as tar:
        meta = json.loads(tar.extractfile("00000000.meta.json").read())
    assert meta["conditioning"] == {"buoyancy": 0.3} and meta["shape"] == [8, 8, 8, 1]


def test_a_full_disk_while_resharding_keeps_the_old_data_set(tmp_path: Path) -> None:
    """On a 10 MiB tmpfs a 6.5 MB split fits once but not twice: rewriting it fails naming the full disk and
    both folders, and the split in place is the old one, whole."""
    from small_disk import small_disk

    with small_disk(tmp_path / "disk", "10m") as disk:

        def big(offset: int):
            for i in range(50):
                data = np.random.default_rng(i + offset).standard_normal((8, 64, 64, 1)).astype(np.float32)
                yield Trajectory("alpha", i, data, ["c0"], 0.1, 1 / 64, 1 / 64)

        old = write_shards(big(0), disk / "alpha", "alpha", "train", per_shard=5)
        with pytest.raises(
            DataError,
            match=r"writing alpha/train into .*\.train\.writing-.* failed \(No space left "
            r"on device\); .*/alpha/train is unchanged",
        ):
            write_shards(big(100), disk / "alpha", "alpha", "train", per_shard=5)
        assert read_manifest(disk / "alpha" / "train") == old
        assert [p.name for p in (disk / "alpha").iterdir()] == ["train"]  # the staging is gone: space is back


def test_a_remote_shard_is_checked_as_it_streams_and_a_mismatch_stops_even_in_skip_mode(tmp_path: Path) -> None:
    from nestor_ds.data.shards import SHARD_CHECKS

    make_set(tmp_path, "alpha", 4, 8, 1, per_shard=1)
    SHARD_CHECKS.intact.clear()
    for on_bad in ("raise", "skip"):
        cfg = run_config(
            tmp_path, {"alpha": (8, 1, 1.0)}, batch=2, resolution=8, windows_per_trajectory=1, on_bad_sample=on_bad
        )
        cfg.data.root = f"pipe:cat {tmp_path}/{{path}}"
        take(train_batches(cfg, 0, 1), 4)  # intact: two epochs stream through the check
    assert len(SHARD_CHECKS.intact) == 4 and all(u.startswith("pipe:cat ") for u in SHARD_CHECKS.intact)

    SHARD_CHECKS.intact.clear()
    _flip_a_bit(tmp_path / "alpha" / "train" / "shard-000002.tar")
    with pytest.raises(DataError, match=r"shard-000002.tar: the streamed bytes do not match .* the run stops"):
        take(train_batches(cfg, 0, 1), 4)  # skip mode: its samples were already read, so it cannot be skipped


def test_evaluation_ranks_decode_and_open_only_their_share(tmp_path: Path) -> None:
    """Trajectory i is rank i % world's; a shard holding none of a rank's trajectories is not opened by it (at 128^3
    one trajectory is ~880 MB: every rank decoding every one would not fit)."""
    from nestor_ds.data.loader import open_sources
    from nestor_ds.data.shards import SHARD_CHECKS
    from nestor_ds.data.trajectories import iter_split, split_size

    make_set(tmp_path, "alpha", 7, 8, 1, per_shard=2)  # shards hold trajectories [0 1] [2 3] [4 5] [6]
    (src,) = open_sources(run_config(tmp_path, {"alpha": (8, 1, 1.0)}, batch=2, resolution=8), "train")
    size = {int(p.stem.split("-")[1]): p.stat().st_size for p in (tmp_path / "alpha" / "train").glob("*.tar")}
    assert split_size(src) == 7 and split_size(src, 4) == 4
    for rank, limit, indices, opened in ((1, None, [1, 5], [0, 2]), (3, None, [3], [1]), (1, 4, [1], [0])):
        SHARD_CHECKS.intact.clear()  # as a fresh rank process
        before = SHARD_CHECKS.bytes_hashed
        assert [t.index for t in iter_split(src, limit, rank, 4)] == indices
        assert SHARD_CHECKS.bytes_hashed - before == sum(size[s] for s in opened)
    every = sorted(t.index for r in range(3) for t in iter_split(src, None, r, 3))
    assert every == list(range(7))  # the ranks together: each trajectory exactly once
