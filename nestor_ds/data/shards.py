"""WebDataset shard tars: one trajectory per sample (``data.npy``, optional ``mask.npy``, ``meta.json``).

Writing is atomic: a shard is written as ``*.tar.partial`` and renamed when complete,
and the manifest (counts, shapes, channel statistics, sha256 per shard) is written
last, the same way. A shard that the manifest does not list is never read.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import webdataset as wds

from nestor_ds.data.trajectory import Trajectory

MANIFEST = "manifest.json"


class DataError(ValueError):
    """Bad shard or sample: the message names the shard and the sample."""


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def decode_npy(raw: bytes, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)  # never unpickle
    except Exception as err:  # noqa: BLE001 - any decoding failure is bad data
        raise DataError(f"{where}: cannot decode .npy ({err})") from None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


class _ChannelStats:
    """Per-channel mean and std over every frame and point, in float64."""

    def __init__(self) -> None:
        self.n = 0
        self.s1: np.ndarray | None = None
        self.s2: np.ndarray | None = None

    def add(self, data: np.ndarray) -> None:
        flat = data.reshape(-1, data.shape[-1]).astype(np.float64)
        s1, s2 = flat.sum(0), np.square(flat).sum(0)
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.n += flat.shape[0]

    def result(self) -> tuple[list[float], list[float]]:
        if self.n == 0 or self.s1 is None or self.s2 is None:
            return [], []
        mean = self.s1 / self.n
        var = np.maximum(self.s2 / self.n - mean**2, 0.0)
        return mean.tolist(), np.sqrt(var).tolist()


@dataclass
class ShardInfo:
    name: str
    count: int
    sha256: str
    bytes: int


class SplitWriter:
    """Streams trajectories of one data set's split into ``<out_dir>/<split>/shard-NNNNNN.tar`` files."""

    def __init__(self, out_dir: str | Path, dataset: str, split: str, per_shard: int = 16) -> None:
        if per_shard < 1:
            raise ValueError(f"per_shard must be at least 1, got {per_shard}")
        self.dataset, self.split, self.per_shard = dataset, split, per_shard
        self.folder = Path(out_dir) / split
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("*.partial"):
            stale.unlink()
        self.shards: list[ShardInfo] = []
        self.stats = _ChannelStats()
        self.shapes: set[tuple[int, ...]] = set()
        self.channels: list[str] | None = None
        self.dt: float | None = None
        self._writer: wds.TarWriter | None = None
        self._tmp: Path | None = None
        self._count = 0

    def add(self, traj: Trajectory) -> None:
        where = f"{self.dataset}/{self.split} trajectory {traj.index}"
        if traj.dataset != self.dataset:
            raise DataError(f"{where}: belongs to {traj.dataset!r}")
        if not np.isfinite(traj.data).all():
            raise DataError(f"{where}: NaN or Inf values in the source")
        if self.channels is None:
            self.channels, self.dt = traj.channels, traj.dt
        elif traj.channels != self.channels:
            raise DataError(f"{where}: channels {traj.channels} differ from {self.channels}")
        if self._writer is None:
            self._tmp = self.folder / f"shard-{len(self.shards):06d}.tar.partial"
            self._writer = wds.TarWriter(str(self._tmp), encoder=False)
        sample = {"__key__": f"{traj.index:08d}", "data.npy": encode_npy(traj.data),
                  "meta.json": json.dumps(traj.meta()).encode()}
        if traj.mask is not None:
            sample["mask.npy"] = encode_npy(traj.mask.astype(np.float32))
        self._writer.write(sample)
        self.stats.add(traj.data)
        self.shapes.add(tuple(traj.data.shape))
        self._count += 1
        if self._count == self.per_shard:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._writer is None or self._tmp is None:
            return
        self._writer.close()
        final = self._tmp.with_suffix("")  # strip .partial: only a finished shard gets its real name
        os.replace(self._tmp, final)
        self.shards.append(ShardInfo(final.name, self._count, sha256_of(final), final.stat().st_size))
        self._writer, self._tmp, self._count = None, None, 0

    def close(self) -> dict[str, Any]:
        """Finish the last shard and write the manifest (last, atomically); return it."""
        self._close_shard()
        mean, std = self.stats.result()
        manifest = {
            "dataset": self.dataset, "split": self.split, "count": sum(s.count for s in self.shards),
            "shapes": sorted(list(s) for s in self.shapes), "channels": self.channels or [],
            "mean": mean, "std": std, "dt": self.dt, "shards": [vars(s) for s in self.shards],
        }
        _write_atomic_text(self.folder / MANIFEST, json.dumps(manifest, indent=1))
        return manifest


def write_shards(trajectories: Iterable[Trajectory], out_dir: str | Path, dataset: str, split: str,
                 per_shard: int = 16) -> dict[str, Any]:
    """Write one split's shards and manifest; return the manifest."""
    writer = SplitWriter(out_dir, dataset, split, per_shard)
    for traj in trajectories:
        writer.add(traj)
    return writer.close()


def read_manifest(folder: str | Path, verify: bool = True) -> dict[str, Any]:
    """Load a split's manifest; with ``verify`` check every shard's size and sha256."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(f"{folder}: no {MANIFEST} (shards missing, or their writing never finished)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    for shard in manifest["shards"]:
        file = folder / shard["name"]
        if not file.is_file():
            raise DataError(f"{file}: listed in {path} but missing")
        if verify and (file.stat().st_size != shard["bytes"] or sha256_of(file) != shard["sha256"]):
            raise DataError(f"{file}: checksum does not match {path} (truncated or corrupt shard)")
    return manifest


def iter_raw_samples(shard: Path) -> Iterator[dict[str, Any]]:
    """Raw (undecoded) samples of one shard, through WebDataset's tar reader; errors name the shard."""
    try:
        yield from wds.tarfile_samples([{"url": str(shard)}])
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - tarfile raises many kinds on truncation/corruption
        raise DataError(f"{shard}: unreadable tar ({type(err).__name__}: {err})") from None


def decode_sample(raw: dict[str, Any], channels: list[str]) -> Trajectory:
    """Check and decode one raw sample; every failure names shard and sample key."""
    where = f"{raw.get('__url__', '?')} sample {raw.get('__key__', '?')}"
    for key in ("data.npy", "meta.json"):
        if key not in raw:
            raise DataError(f"{where}: missing {key}")
    try:
        meta = json.loads(raw["meta.json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{where}: bad meta.json ({err})") from None
    data = decode_npy(raw["data.npy"], where)
    if data.ndim != 4 or list(data.shape) != list(meta.get("shape", [])):
        raise DataError(f"{where}: data shape {list(data.shape)} does not match meta shape {meta.get('shape')}")
    if data.shape[-1] != len(channels) or meta.get("channels") != channels:
        raise DataError(f"{where}: channels {meta.get('channels')} do not match the manifest's {channels}")
    if not np.isfinite(data).all():
        raise DataError(f"{where}: NaN or Inf values")
    mask = decode_npy(raw["mask.npy"], where) if "mask.npy" in raw else None
    if mask is not None and mask.shape != data.shape[1:3]:
        raise DataError(f"{where}: mask shape {mask.shape} does not match grid {data.shape[1:3]}")
    return Trajectory(meta["dataset"], int(meta["index"]), data, channels, float(meta["dt"]), float(meta["dx"]),
                      float(meta["dy"]), dict(meta.get("conditioning", {})), mask)
