"""WebDataset shard tars: one trajectory per sample (``data.npy``, optional ``mask.npy``, ``meta.json``).

Writing is atomic: a shard is written as ``*.tar.partial`` and renamed when complete,
and the manifest (counts, shapes, channel statistics, sha256 per shard) is written
last, the same way. A shard that the manifest does not list is never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import webdataset as wds
from webdataset.tariterators import group_by_keys

from nestor_ds.atomic import fsync_dir, write_text_atomic
from nestor_ds.config.loading import parse_json_object
from nestor_ds.data.trajectory import Trajectory
from nestor_ds.errors import UserError
from nestor_ds.integrity import sha256_of

MANIFEST = "manifest.json"


class DataError(UserError):
    """Bad shard or sample: the message names the shard and the sample."""


def encode_npy(array: np.ndarray) -> bytes:
    """``array`` as .npy bytes (no pickle), the form shards store."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def decode_npy(raw: bytes, where: str) -> np.ndarray:
    """.npy bytes back to an array, never unpickling; bad bytes raise DataError naming ``where``."""
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)  # never unpickle
    except Exception as err:  # noqa: BLE001 - any decoding failure is bad data
        raise DataError(f"{where}: cannot decode .npy ({err})") from None


class ChannelStats:
    """Per-channel sums over every frame and point, in float64; shards' stats add up to the split's."""

    def __init__(self, n: int = 0, s1: list[float] | None = None, s2: list[float] | None = None) -> None:
        self.n = n
        self.s1 = None if s1 is None else np.asarray(s1, dtype=np.float64)
        self.s2 = None if s2 is None else np.asarray(s2, dtype=np.float64)

    def add(self, data: np.ndarray) -> None:
        """Count one trajectory's values ``[..., C]``."""
        flat = data.reshape(-1, data.shape[-1]).astype(np.float64)
        self.merge(ChannelStats(flat.shape[0], flat.sum(0), np.square(flat).sum(0)))

    def merge(self, other: "ChannelStats") -> None:
        """Add another partial count (shards written in parallel)."""
        if other.s1 is None or other.s2 is None:
            return
        self.s1 = other.s1.copy() if self.s1 is None else self.s1 + other.s1
        self.s2 = other.s2.copy() if self.s2 is None else self.s2 + other.s2
        self.n += other.n

    def result(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of everything counted (empty lists when nothing was)."""
        if self.n == 0 or self.s1 is None or self.s2 is None:
            return [], []
        mean = self.s1 / self.n
        var = np.maximum(self.s2 / self.n - mean**2, 0.0)
        return mean.tolist(), np.sqrt(var).tolist()


@dataclass
class ShardInfo:
    """A written shard as its manifest lists it: name, trajectories, bytes, sha256."""

    name: str
    count: int
    sha256: str
    bytes: int


@dataclass
class ShardResult:
    """What one finished shard tells its split's manifest (picklable: conversion workers return it)."""

    info: ShardInfo
    stats: ChannelStats
    shapes: set[tuple[int, ...]]
    channels: list[str]
    dt: float | None
    predicted: int | None = None  # leading predicted channels, where the source says (the Well)


class ShardFile:
    """One shard tar being written: ``*.tar.partial`` until :meth:`close` renames it to its real name."""

    def __init__(self, folder: Path, number: int, dataset: str, split: str) -> None:
        self.dataset, self.split = dataset, split
        self.final = folder / f"shard-{number:06d}.tar"
        self.tmp = self.final.with_name(self.final.name + ".partial")
        self.writer = wds.TarWriter(str(self.tmp), encoder=False)
        self.result = ShardResult(ShardInfo(self.final.name, 0, "", 0), ChannelStats(), set(), [], None)

    def add(self, traj: Trajectory) -> None:
        """Append one trajectory to the shard (its arrays and metadata as tar members)."""
        where = f"{self.dataset}/{self.split} trajectory {traj.index}"
        r = self.result
        if traj.dataset != self.dataset:
            raise DataError(f"{where}: belongs to {traj.dataset!r}")
        if not np.isfinite(traj.data).all():
            raise DataError(f"{where}: NaN or Inf values in the source")
        if not r.channels:
            r.channels, r.dt, r.predicted = list(traj.channels), traj.dt, traj.predicted
        elif traj.channels != r.channels or traj.predicted != r.predicted:
            raise DataError(
                f"{where}: channels {traj.channels} (predicted {traj.predicted}) differ from {r.channels} "
                f"(predicted {r.predicted})"
            )
        sample = {
            "__key__": f"{traj.index:08d}",
            "data.npy": encode_npy(traj.data),
            "meta.json": json.dumps(traj.meta()).encode(),
        }
        if traj.mask is not None:
            sample["mask.npy"] = encode_npy(traj.mask.astype(np.float32))
        self.writer.write(sample)
        r.stats.add(traj.data)
        r.shapes.add(tuple(traj.data.shape))
        r.info.count += 1

    def close(self) -> ShardResult:
        """Finish the tar, hash it and move it into place; returns what the manifest needs."""
        self.writer.close()
        os.replace(self.tmp, self.final)  # only a finished shard gets its real name
        self.result.info.sha256 = sha256_of(self.final)
        self.result.info.bytes = self.final.stat().st_size
        return self.result

    def abort(self) -> None:
        """Remove the unfinished tar (an error while writing leaves nothing half-written)."""
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def write_shard(
    folder: Path,
    number: int,
    dataset: str,
    split: str,
    trajectories: Iterable[Trajectory],
    on_trajectory: Callable[[], None] | None = None,
) -> ShardResult:
    """Write one whole shard atomically: on any error the partial file is removed and nothing is named a shard."""
    shard = ShardFile(folder, number, dataset, split)
    try:
        for traj in trajectories:
            shard.add(traj)
            if on_trajectory is not None:
                on_trajectory()
    except BaseException:
        shard.abort()
        raise
    return shard.close()


def write_manifest(
    folder: Path, dataset: str, split: str, results: list[ShardResult], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The split's manifest from its shards in order, written last and atomically."""
    stats, shapes, dt, predicted = ChannelStats(), set(), None, None
    channels: list[str] = []
    for r in results:
        if channels and r.channels and r.channels != channels:
            raise DataError(f"{folder / r.info.name}: channels {r.channels} differ from {channels}")
        channels, dt = channels or r.channels, dt if dt is not None else r.dt
        predicted = predicted if predicted is not None else r.predicted
        stats.merge(r.stats)
        shapes |= r.shapes
    mean, std = stats.result()
    dims = sorted({len(s) - 2 for s in shapes})
    if len(dims) > 1:
        raise DataError(f"{folder}: {dataset}/{split} mixes trajectories of {dims} space dimensions")
    manifest = {
        "dataset": dataset,
        "split": split,
        "count": sum(r.info.count for r in results),
        "space_dims": dims[0] if dims else None,
        "layout": "T X Y Z C" if dims == [3] else "T X Y C",  # axes of every sample's data.npy
        "shapes": sorted(list(s) for s in shapes),
        "channels": channels,
        **({"predicted_channels": predicted} if predicted is not None else {}),
        "mean": mean,
        "std": std,
        "dt": dt,
        **(extra or {}),
        "shards": [vars(r.info) for r in results],
    }
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


class StagedFolder:
    """A folder written beside the one in place (``.<name>.writing-<pid>-<random>``) and switched in only
    once whole: until :meth:`commit` readers see the old content, a failed or interrupted writing leaves it
    untouched, and two writers never share (or delete) each other's unfinished files."""

    def __init__(self, final: str | Path) -> None:
        self.final = Path(final)
        self.path = self.final.parent / f".{self.final.name}.writing-{os.getpid()}-{secrets.token_hex(3)}"
        self.path.mkdir(parents=True)

    def commit(self) -> None:
        """Move the old folder aside, the new one in, then delete the old one."""
        old = None
        if self.final.exists():
            old = self.path.with_name(self.path.name.replace(".writing-", ".replaced-"))
            os.replace(self.final, old)
        os.replace(self.path, self.final)
        fsync_dir(self.final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Remove the staging folder; the previous shards, if any, stay as they were."""
        shutil.rmtree(self.path, ignore_errors=True)

    @contextlib.contextmanager
    def writing(self, what: str) -> Iterator[Path]:
        """Any failure inside removes the staging; an OSError (a full disk) becomes a DataError naming both
        folders."""
        try:
            yield self.path
        except OSError as err:
            self.abort()
            raise DataError(
                f"writing {what} into {self.path} failed ({err.strerror or err}); {self.final} is unchanged"
            ) from err
        except BaseException:
            self.abort()
            raise


class SplitWriter:
    """Streams trajectories of one data set's split into ``<out_dir>/<split>/shard-NNNNNN.tar`` files.

    A shard is closed after ``per_shard`` trajectories or once it holds ``shard_bytes``
    of arrays, whichever comes first (``None`` switches a limit off).
    """

    def __init__(
        self,
        out_dir: str | Path,
        dataset: str,
        split: str,
        per_shard: int | None = 16,
        shard_bytes: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if per_shard is not None and per_shard < 1:
            raise ValueError(f"per_shard must be at least 1, got {per_shard}")
        if shard_bytes is not None and shard_bytes < 1:
            raise ValueError(f"shard_bytes must be positive, got {shard_bytes}")
        self.dataset, self.split, self.per_shard, self.shard_bytes = dataset, split, per_shard, shard_bytes
        self.extra = extra
        self.staged = StagedFolder(Path(out_dir) / split)  # the split in place (if any) stays until close()
        self.folder = self.staged.path
        self.results: list[ShardResult] = []
        self._shard: ShardFile | None = None
        self._bytes = 0

    def add(self, traj: Trajectory) -> None:
        """Write one trajectory, starting a new shard when the current one is full."""
        if self._shard is None:
            self._shard, self._bytes = ShardFile(self.folder, len(self.results), self.dataset, self.split), 0
        try:
            self._shard.add(traj)
        except BaseException:
            self._shard.abort()
            self._shard = None
            raise
        self._bytes += traj.data.nbytes
        full_count = self.per_shard is not None and self._shard.result.info.count >= self.per_shard
        full_bytes = self.shard_bytes is not None and self._bytes >= self.shard_bytes
        if full_count or full_bytes:
            self.results.append(self._shard.close())
            self._shard = None

    def close(self) -> dict[str, Any]:
        """Finish the last shard and write the manifest (last, atomically), then switch the split in; return
        the manifest."""
        with self.staged.writing(f"{self.dataset}/{self.split}"):
            if self._shard is not None:
                self.results.append(self._shard.close())
                self._shard = None
            manifest = write_manifest(self.folder, self.dataset, self.split, self.results, self.extra)
            self.staged.commit()
        return manifest


def write_shards(
    trajectories: Iterable[Trajectory], out_dir: str | Path, dataset: str, split: str, per_shard: int = 16
) -> dict[str, Any]:
    """Write one split's shards and manifest; return the manifest."""
    writer = SplitWriter(out_dir, dataset, split, per_shard)
    with writer.staged.writing(f"{dataset}/{split}"):  # a failed or interrupted source: nothing switched in
        for traj in trajectories:
            writer.add(traj)
    return writer.close()


# ---------------------------------------------------------------- where shards live: folders or URLs


def is_remote(location: str | Path) -> bool:
    """True for what WebDataset opens itself: ``http(s)://...``, ``pipe:CMD`` and other ``scheme://`` URLs."""
    text = str(location)
    return text.startswith("pipe:") or ("://" in text and not text.startswith("file://"))


def locate(base: str | Path, rel: str) -> str:
    """``rel`` (``<data set>/<split>/<file>``) under a shard root: a folder, a URL, or a ``pipe:`` command.

    A ``pipe:`` root names where the path goes with ``{path}``, e.g.
    ``pipe:aws s3 cp s3://bucket/shards/{path} -``.
    """
    text = str(base)
    if text.startswith("pipe:"):
        if "{path}" not in text:
            raise DataError(
                f"shard root {text!r}: a pipe: command needs a {{path}} placeholder, "
                f"e.g. 'pipe:aws s3 cp s3://bucket/shards/{{path}} -'"
            )
        return text.replace("{path}", rel)
    if is_remote(text):
        return text.rstrip("/") + "/" + rel
    return str(Path(text.removeprefix("file://")) / rel)


def subfolder(base: str | Path, rel: str) -> str:
    """A folder below ``base`` that :func:`locate` can go on from (a ``pipe:`` keeps its ``{path}`` slot)."""
    if str(base).startswith("pipe:"):
        return locate(base, rel.rstrip("/") + "/{path}")
    return locate(base, rel)


def _read_remote(url: str) -> bytes:
    try:
        with wds.gopen(url, "rb") as stream:
            return stream.read()
    except Exception as err:  # noqa: BLE001 - curl/pipe failures come as several types
        raise DataError(f"{url}: cannot read ({type(err).__name__}: {err})") from None


def read_manifest(folder: str | Path, check_sizes: bool = True) -> dict[str, Any]:
    """Load a split's manifest and check that every local shard is there (with ``check_sizes``: at its size).

    Nothing is hashed here: a shard's sha256 is checked by the process that reads it, when it first opens it
    (:func:`iter_raw_samples`), so start-up does not grow with the data. ``folder`` may be a URL or a ``pipe:``
    location (see :func:`locate`).
    """
    if is_remote(folder):
        url = locate(folder, MANIFEST)
        raw = _read_remote(url)
        if not raw:
            raise DataError(f"{url}: empty manifest (shards missing, or their writing never finished)")
        return parse_json_object(raw, url, DataError)
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(f"{folder}: no {MANIFEST} (shards missing, or their writing never finished)")
    manifest = parse_json_object(path.read_text(), path, DataError)
    for shard in manifest["shards"]:
        file = folder / shard["name"]
        if not file.is_file():
            raise DataError(f"{file}: listed in {path} but missing")
        if check_sizes and file.stat().st_size != shard["bytes"]:
            raise DataError(f"{file}: {file.stat().st_size} bytes, {path} says {shard['bytes']} (truncated shard)")
    return manifest


class ShardCorrupt(DataError):
    """A shard whose bytes do not match its manifest's sha256. ``used``: samples of it were already read (a
    remote shard is checked as it streams), so skipping it cannot undo them."""

    def __init__(self, message: str, used: bool) -> None:
        super().__init__(message)
        self.used = used


@dataclass
class ShardChecks:
    """This process's shard checks: the shards found intact (never hashed again) and the bytes hashed."""

    intact: set[str]
    bytes_hashed: int = 0


SHARD_CHECKS = ShardChecks(set())  # per process: each loader worker checks the shards it reads


def needs_whole_read(shard: str | Path, sha256: str | None) -> bool:
    """Whether a reader must go on to the end of ``shard`` even when it wants fewer samples: a remote shard not
    yet checked is hashed as it streams, and its check completes only at its end."""
    return sha256 is not None and is_remote(shard) and str(shard) not in SHARD_CHECKS.intact


def _check_local(path: str, sha256: str) -> None:
    """Hash the file (it then sits in the page cache for the read that follows) before any sample is used."""
    if path in SHARD_CHECKS.intact:
        return
    SHARD_CHECKS.bytes_hashed += os.path.getsize(path)
    if sha256_of(Path(path)) != sha256:
        raise ShardCorrupt(f"{path}: sha256 does not match its manifest (corrupt shard); none of it is used", False)
    SHARD_CHECKS.intact.add(path)


class _Hashing(io.RawIOBase):
    """A read-through stream that hashes what passes."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.sha = stream, hashlib.sha256()
        self.bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        self.sha.update(data)
        self.bytes += len(data)
        return len(data)


def _remote_tar_members(url: str, sha256: str | None) -> Iterator[dict[str, Any]]:
    """A remote tar's files as they stream; with ``sha256``, the stream is hashed and checked at its end."""
    with wds.gopen(url, "rb") as raw:
        stream = _Hashing(raw)
        with tarfile.open(fileobj=io.BufferedReader(stream, 1 << 20), mode="r|") as tar:
            for member in tar:
                if member.isreg() and not member.name.startswith("__"):
                    file = tar.extractfile(member)
                    yield {"fname": member.name, "data": file.read() if file else b"", "__url__": url}
            while stream.read(1 << 20):  # the tar's end padding: part of the file's hash
                pass
    if sha256 is not None and url not in SHARD_CHECKS.intact:
        SHARD_CHECKS.bytes_hashed += stream.bytes
        if stream.sha.hexdigest() != sha256:
            raise ShardCorrupt(
                f"{url}: the streamed bytes do not match the manifest's sha256 (corrupt or replaced shard); "
                f"its samples were read as it streamed, so the run stops",
                True,
            )
        SHARD_CHECKS.intact.add(url)
    yield {}  # end of shard: the last sample is complete


def _local_tar_members(path: str) -> Iterator[dict[str, Any]]:
    """A local tar's files for WebDataset's ``group_by_keys``, each read in one call: WebDataset's streaming
    reader (which pipes and URLs need) copies in 10 KiB records, three times slower on large samples."""
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if member.isreg() and not member.name.startswith("__"):
                file = tar.extractfile(member)  # a regular member always has one
                yield {"fname": member.name, "data": file.read() if file else b"", "__url__": path}
    yield {}  # end of shard: the last sample is complete


def iter_raw_samples(shard: str | Path, sha256: str | None = None) -> Iterator[dict[str, Any]]:
    """Raw (undecoded) samples of one shard (a file, URL or ``pipe:``), grouped by WebDataset.

    With ``sha256`` (the manifest's), the shard is checked the first time this process opens it: a local file
    is hashed before its first sample is read; a remote one as it streams, the mismatch raised at its end (read
    it to the end: :func:`needs_whole_read`). A mismatch raises :class:`ShardCorrupt`; errors name the shard.
    """
    try:
        if is_remote(shard):
            yield from group_by_keys(_remote_tar_members(str(shard), sha256))
        else:
            path = str(shard).removeprefix("file://")
            if sha256 is not None:
                _check_local(path, sha256)
            yield from group_by_keys(_local_tar_members(path))
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
    if data.ndim not in (4, 5) or list(data.shape) != list(meta.get("shape", [])):
        raise DataError(f"{where}: data shape {list(data.shape)} does not match meta shape {meta.get('shape')}")
    if data.shape[-1] != len(channels) or meta.get("channels") != channels:
        raise DataError(f"{where}: channels {meta.get('channels')} do not match the manifest's {channels}")
    if not np.isfinite(data).all():
        raise DataError(f"{where}: NaN or Inf values")
    mask = decode_npy(raw["mask.npy"], where) if "mask.npy" in raw else None
    if mask is not None and mask.shape != data.shape[1:-1]:
        raise DataError(f"{where}: mask shape {mask.shape} does not match grid {data.shape[1:-1]}")
    if (data.ndim == 5) != ("dz" in meta):
        raise DataError(
            f"{where}: a {data.ndim - 2}-D sample {'without' if data.ndim == 5 else 'with'} dz in meta.json"
        )
    return Trajectory(
        meta["dataset"],
        int(meta["index"]),
        data,
        channels,
        float(meta["dt"]),
        float(meta["dx"]),
        float(meta["dy"]),
        dict(meta.get("conditioning", {})),
        mask,
        float(meta["dz"]) if "dz" in meta else None,
        int(meta["predicted"]) if "predicted" in meta else None,
    )
