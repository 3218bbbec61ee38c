"""The mixed, resumable window stream every rank trains on.

Design (why it is shaped like this):
- Each data set's split is a list of shards (from its manifest). For every pass
  ("epoch") over a data set the shard order is shuffled from (seed, data set,
  epoch) and the shards are dealt to the ``ranks x workers`` slots, so within an
  epoch no two slots see the same trajectory; a data set that runs out simply
  starts its next epoch (resampling), independent of the others.
- Each sample of a slot's stream picks its data set from a random stream seeded
  by (seed, slot), with probability proportional to n_train x weight as DPOT
  (or weight alone); each trajectory gives one random window seeded by (seed,
  data set, epoch, item). So the stream is a pure function of the seed, and
  resuming at micro-batch N is arithmetic: count how many picks each data set
  got before N, jump to that shard, skip raw (undecoded) samples.
- With ``data.subset: dpot`` a data set uses only its first ``dpot_train``
  trajectories (DPOT's master file), which is a filter on shard positions.
- Windows are resized to the model's grid (bilinear; trilinear in 3-D), channels padded to
  the common count (with ``data.pad_value``, DPOT's 1), with a mask of scored
  points and channels; every batch on every rank has the same shape, as expert
  parallelism requires. A set whose aspect ratio is not the model grid's fills the
  largest region with its own aspect (``data.resize: keep_aspect``), placed at the
  origin; the rest of the grid is padding, out of the scored mask, and the batch says
  each sample's region (``extent``) so feedback can keep it padding. Sets of any shapes
  therefore share one batch (pad with a mask, not one set per batch), and every
  rank's all-to-all buffers keep one shape.
- Shards may live in a folder or behind a URL WebDataset opens (http(s)://,
  ``pipe:``); every read goes through :func:`Source.url`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from nestor_ds.config.schema import DatasetEntry, RunConfig
from nestor_ds.data.feedback import channel_roles
from nestor_ds.data.shards import (
    DataError,
    ShardCorrupt,
    decode_sample,
    is_remote,
    iter_raw_samples,
    locate,
    needs_whole_read,
    read_manifest,
    subfolder,
)
from nestor_ds.data.trajectory import Trajectory

log = logging.getLogger(__name__)
CHOICE_BLOCK = 4096


@dataclass
class Source:
    """One data set's split as the loader sees it."""

    name: str
    id: int
    folder: str  # the split's folder, URL or pipe: location
    manifest: dict[str, Any]
    weight: float
    limit: int  # trajectories used: the first ``limit`` in manifest order
    scored: int | None = None  # leading channels scored (None: all real ones)
    rollout: int | None = None  # frames evaluated after t_in (None: to the end)
    predicted: int | None = None  # leading channels the model predicts (None: all real ones; the rest input only)
    periodic: bool = False  # the data set's boundaries are periodic (patch jittering rolls instead of padding)
    verify: bool = True  # check each shard's sha256 when this process first opens it (data.verify_checksums)
    stats: tuple[list[float], list[float]] | None = None  # the train split's channel mean and std (model.normalize)

    def roles(self, channels: int) -> torch.Tensor:
        """Role of each of the model's channels for this data set (``data.feedback``)."""
        return channel_roles(len(self.manifest["channels"]), self.predicted, channels)

    @property
    def shard_counts(self) -> list[int]:
        """Trajectories in each shard, in manifest order."""
        return [s["count"] for s in self.manifest["shards"]]

    def url(self, shard: int) -> str:
        """Where shard number ``shard`` is read from (path, URL or pipe)."""
        return locate(self.folder, self.manifest["shards"][shard]["name"])

    def sha256(self, shard: int) -> str | None:
        """The sha256 shard number ``shard`` is checked against on first open (None: not checked)."""
        return str(self.manifest["shards"][shard]["sha256"]) if self.verify else None


def split_manifest(cfg: RunConfig, entry: DatasetEntry, split: str, check_sizes: bool) -> tuple[str, dict[str, Any]]:
    """Where a configured data set's ``split`` lives (its ``shards``, else ``data.root/<name>``) and its manifest."""
    base = entry.shards if entry.shards else subfolder(cfg.data.root, entry.name)
    folder = subfolder(base, split)
    return folder, read_manifest(folder if is_remote(folder) else Path(folder), check_sizes)


def open_sources(cfg: RunConfig, split: str) -> list[Source]:
    """Every configured data set's ``split`` as a :class:`Source`: manifest read, local shards there at their
    sizes (``data.verify_checksums``; nothing hashed: see :func:`iter_raw_samples`), DPOT's subset limit,
    mixing weight, scored and predicted channels, and the train split's channel statistics."""
    train = split == cfg.data.train_split
    sources = []
    for i, entry in enumerate(cfg.data.datasets):
        info = cfg.data.info(entry.name)
        folder, manifest = split_manifest(cfg, entry, split, cfg.data.verify_checksums)
        if manifest["count"] == 0:
            raise DataError(f"{folder}: the manifest lists no trajectories")
        dims = manifest.get("space_dims") or 2  # manifests written before 3-D data hold 2-D samples
        if dims != cfg.model.dims:
            raise DataError(
                f"{folder}: data set {entry.name!r} holds {dims}-D samples ({manifest.get('shapes', [])[:1]}), "
                f"the model is {cfg.model.dims}-D (model.grid={cfg.model.grid})"
            )
        limit = manifest["count"]
        dpot_n = info.dpot_train if train else info.dpot_test
        if cfg.data.subset == "dpot" and dpot_n is not None:
            limit = min(limit, dpot_n)
        weight = entry.weight if entry.weight is not None else info.weight
        if cfg.data.mixing == "size_weighted":
            weight *= limit
        predicted = info.predicted_channels or manifest.get("predicted_channels")  # the registry, else the source
        scored = predicted if cfg.data.score_channels == "predicted" else None
        rollout = info.rollout if cfg.data.subset == "dpot" else None
        stats = (manifest["mean"], manifest["std"]) if train else None
        if not train and cfg.model.normalize == "stats":  # the units the model was trained in: the train split's
            try:
                _, kept = split_manifest(cfg, entry, cfg.data.train_split, False)
            except DataError as err:
                raise DataError(
                    f"model.normalize=stats needs the train split's statistics of {entry.name!r}: {err}"
                ) from None
            stats = (kept["mean"], kept["std"])
        sources.append(
            Source(
                entry.name,
                i,
                folder,
                manifest,
                weight,
                limit,
                scored,
                rollout,
                predicted,
                info.periodic,
                cfg.data.verify_checksums,
                stats,
            )
        )
    return sources


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([k & 0xFFFFFFFF for k in key])


def epoch_items(src: Source, seed: int, epoch: int, slot: int, n_slots: int) -> list[tuple[int, int]]:
    """(shard, position) pairs that ``slot`` reads in this epoch of ``src``, in order."""
    counts = src.shard_counts
    starts = np.concatenate([[0], np.cumsum(counts)])
    used = [max(0, min(c, src.limit - int(starts[s]))) for s, c in enumerate(counts)]  # first ``limit`` only
    order = [int(s) for s in _rng(seed, src.id, epoch).permutation(len(counts)) if used[s]]
    if len(order) >= n_slots:  # deal whole shards
        return [(s, p) for s in order[slot::n_slots] for p in range(used[s])]
    items = [(s, p) for s in order for p in range(used[s])]  # fewer shards than slots: deal samples
    return items[slot::n_slots]


class SourceStream:
    """One slot's endless stream of one data set, starting ``start`` trajectories in.

    With ``on_bad="skip"`` a bad sample is dropped and counted, an unreadable tar loses the rest of its shard,
    and ``max_bad`` failures in a row (or an epoch without one usable sample) stop the stream naming the data
    set: skipping never turns into an endless search."""

    def __init__(
        self, src: Source, seed: int, slot: int, n_slots: int, start: int, on_bad: str, max_bad: int = 20
    ) -> None:
        self.src, self.seed, self.slot, self.n_slots, self.on_bad = src, seed, slot, n_slots, on_bad
        self.max_bad = max_bad
        self.skipped = 0
        self.consecutive = 0
        self._iter = self._run(start)

    def __next__(self) -> tuple[Trajectory, np.random.Generator]:
        return next(self._iter)

    def _bad(self, err: DataError, what: str) -> None:
        if self.on_bad == "raise":
            raise err
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive >= self.max_bad:
            raise DataError(
                f"{self.src.name}: {self.consecutive} bad samples or shards in a row "
                f"(data.max_bad_samples={self.max_bad}); the last: {err}"
            ) from None
        log.warning("skipping %s (%d so far): %s", what, self.skipped, err)

    def _run(self, start: int) -> Iterator[tuple[Trajectory, np.random.Generator]]:
        epoch = 0
        while True:
            items = epoch_items(self.src, self.seed, epoch, self.slot, self.n_slots)
            if not items:
                raise DataError(
                    f"{self.src.folder}: {self.src.manifest['count']} trajectories cannot feed {self.n_slots} "
                    f"rank x worker slots; write more shards or use fewer workers"
                )
            if start >= len(items):
                start -= len(items)
                epoch += 1
                continue
            wanted = items[start:]
            start = 0
            by_shard: dict[int, set[int]] = {}
            for s, p in wanted:
                by_shard.setdefault(s, set()).add(p)
            usable = 0
            for shard in dict.fromkeys(s for s, _ in wanted):  # keeps the dealt order
                url, sha256 = self.src.url(shard), self.src.sha256(shard)
                whole = needs_whole_read(url, sha256)  # a remote shard not yet checked: to its end
                last = self.src.shard_counts[shard] if whole else max(by_shard[shard])
                try:
                    for pos, raw in enumerate(iter_raw_samples(url, sha256)):
                        if pos > last:
                            break
                        if pos not in by_shard[shard]:
                            continue
                        window_rng = _rng(self.seed, self.src.id, epoch, shard, pos)
                        try:
                            traj = decode_sample(raw, self.src.manifest["channels"])
                        except DataError as err:
                            self._bad(err, "bad sample")
                            continue
                        usable += 1
                        self.consecutive = 0
                        yield traj, window_rng
                except ShardCorrupt as err:  # a local one before any of its samples was used: skippable
                    if err.used:
                        raise
                    self._bad(err, "a corrupt shard")
                except DataError as err:  # the tar itself: the rest of this shard cannot be read
                    self._bad(err, "the rest of an unreadable shard")
            if not usable:
                raise DataError(
                    f"{self.src.name}: not one usable sample in an epoch of this rank's share "
                    f"({len(wanted)} trajectories); {self.skipped} bad samples or shards skipped"
                )
            epoch += 1


def resize(frames: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """[N, C, *space] -> [N, C, *grid]: bilinear in 2-D, trilinear in 3-D, ``align_corners=False`` (DPOT's and
    DPOT-3D's resize); unchanged when already on the grid."""
    if tuple(frames.shape[2:]) == tuple(grid):
        return frames
    mode = {2: "bilinear", 3: "trilinear"}[len(grid)]
    return F.interpolate(frames, size=tuple(grid), mode=mode, align_corners=False)


def fit(space: Sequence[int], grid: Sequence[int], keep_aspect: bool = True) -> tuple[int, ...]:
    """The region of the model ``grid`` a sample on ``space`` is resized to: the whole grid when stretching (or
    when the aspects match), else the largest region with the sample's aspect ratio (``data.resize``)."""
    grid = tuple(int(g) for g in grid)
    if not keep_aspect or len(space) != len(grid):
        return grid
    scale = min(g / n for g, n in zip(grid, space))
    return tuple(min(g, max(1, round(n * scale))) for g, n in zip(grid, space))


def region(extent: Sequence[int]) -> tuple[slice, ...]:
    """The slices of a region placed at the origin of the grid."""
    return tuple(slice(0, int(e)) for e in extent)


def resize_pad(
    data: torch.Tensor, grid: Sequence[int], channels: int, pad_value: float, extent: Sequence[int] | None = None
) -> torch.Tensor:
    """[T, C, *space] -> [*grid, T, C_common]: resized (:func:`resize`) to ``extent`` (default: the whole grid)
    at the grid's origin, the rest of the grid and the missing channels at ``pad_value``."""
    t, c = data.shape[:2]
    extent = tuple(grid) if extent is None else tuple(extent)
    data = resize(data, extent)
    full = data.new_full((*grid, t, channels), float(pad_value))
    full[region(extent)][..., :c] = data.movedim(0, -1).movedim(0, -1)  # [*extent, T, C] into its region
    return full


def scored_mask(
    space: Sequence[int],
    mask: np.ndarray | None,
    real_channels: int,
    grid: Sequence[int],
    channels: int,
    *,
    scored: int | None = None,
    points: str = "all",
    extent: Sequence[int] | None = None,
) -> torch.Tensor:
    """Scored points and channels [*grid, 1, C_common]: the first ``scored`` channels (default: all real ones),
    the geometry mask resized nearest, and with ``points="original"`` only the grid points the data had
    (every ``extent // space``-th point per axis, DPOT's evaluation mask); nothing outside ``extent``."""
    grid = tuple(grid)
    extent = grid if extent is None else tuple(extent)
    real = torch.zeros(*grid, 1, channels)
    pts = torch.ones(1, 1, *space) if mask is None else torch.from_numpy(mask.astype(np.float32))[None, None]
    pts = F.interpolate(pts, size=extent, mode="nearest")[0, 0]
    if points == "original":
        stride = torch.zeros(extent)
        stride[tuple(slice(None, None, max(g // n, 1)) for g, n in zip(extent, space))] = 1
        pts = pts * stride
    real[region(extent)][..., : min(real_channels, scored or real_channels)] = pts[..., None, None]
    return real


def common_grid(
    frames: np.ndarray,
    mask: np.ndarray | None,
    grid: Sequence[int],
    channels: int,
    *,
    pad_value: float = 1.0,
    scored: int | None = None,
    points: str = "all",
    keep_aspect: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, *space, C] frames -> [*grid, T, C_common] and the mask of scored points and channels [*grid, 1, C]
    (the data in the region :func:`fit` gives)."""
    space = frames.shape[1:-1]
    extent = fit(space, grid, keep_aspect)
    data = torch.from_numpy(np.ascontiguousarray(frames)).movedim(-1, 1)  # [T, C, *space]
    return (
        resize_pad(data, grid, channels, pad_value, extent),
        scored_mask(space, mask, frames.shape[-1], grid, channels, scored=scored, points=points, extent=extent),
    )


class WindowCutter:
    """One decoded trajectory that serves any number of training windows: the checks, the layout change,
    the channel padding and the scored mask are done once; a window is then one copy (plus a resize when the
    data's grid is not the model's)."""

    def __init__(
        self,
        traj: Trajectory,
        t_in: int,
        t_out: int,
        grid: Sequence[int],
        channels: int,
        pad_value: float = 1.0,
        scored: int | None = None,
        keep_aspect: bool = True,
    ) -> None:
        steps, space, c = traj.data.shape[0], tuple(traj.data.shape[1:-1]), traj.data.shape[-1]
        self.t_in, self.span = t_in, t_in + t_out
        if len(space) != len(grid):
            raise DataError(
                f"{traj.dataset}[{traj.index}]: a {len(space)}-D trajectory (grid {list(space)}) for a "
                f"{len(grid)}-D model (grid {list(grid)})"
            )
        if self.span > steps:
            raise DataError(f"{traj.dataset}[{traj.index}]: {steps} frames, shorter than the window {self.span}")
        if c > channels:
            raise DataError(f"{traj.dataset}[{traj.index}]: {c} channels, more than the common {channels}")
        self.traj, self.grid, self.channels, self.pad_value = traj, tuple(grid), channels, pad_value
        self.extent = fit(space, self.grid, keep_aspect)  # the region of the grid the data fills
        self.resize = space != self.grid
        frames = torch.from_numpy(traj.data)
        if self.resize:  # resized per window, from [T, C, *space]
            self.data = frames.movedim(-1, 1)
        else:  # [*space, T, C_common] made once: a window is a copy of contiguous runs
            self.data = frames.new_full((*space, steps, channels), float(pad_value))
            self.data[..., :c] = frames.movedim(0, -2)
        self.mask = scored_mask(space, traj.mask, c, self.grid, channels, scored=scored, extent=self.extent)

    def starts(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` random window starts, all different while the trajectory has that many windows."""
        n = self.traj.data.shape[0] - self.span + 1
        return np.concatenate([rng.permutation(n) for _ in range(-(-count // n))])[:count]

    def window_into(self, t0: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Write the window into batch slots x [*grid, t_in, C] and y [*grid, t_out, C]."""
        if self.resize:
            window = resize(self.data[t0 : t0 + self.span], self.extent).movedim(0, -1).movedim(0, -1)
            c = window.shape[-1]
            if self.extent != self.grid:
                x.fill_(self.pad_value)
                y.fill_(self.pad_value)
            else:
                x[..., c:], y[..., c:] = self.pad_value, self.pad_value
            inside = region(self.extent)
            x[inside][..., :c], y[inside][..., :c] = window[..., : self.t_in, :], window[..., self.t_in :, :]
        else:
            x.copy_(self.data[..., t0 : t0 + self.t_in, :])
            y.copy_(self.data[..., t0 + self.t_in : t0 + self.span, :])

    def window(self, t0: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The window starting at frame ``t0``: input, target and scored mask as new tensors."""
        x = torch.empty(*self.grid, self.t_in, self.channels)
        y = torch.empty(*self.grid, self.span - self.t_in, self.channels)
        self.window_into(t0, x, y)
        return x, y, self.mask


def to_window(
    traj: Trajectory,
    rng: np.random.Generator,
    t_in: int,
    t_out: int,
    grid: Sequence[int],
    channels: int,
    pad_value: float = 1.0,
    scored: int | None = None,
    keep_aspect: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random window resized and channel-padded: x [*grid, t_in, C], y [*grid, t_out, C], mask [*grid, 1, C]."""
    cutter = WindowCutter(traj, t_in, t_out, grid, channels, pad_value, scored, keep_aspect)
    return cutter.window(int(cutter.starts(rng, 1)[0]))


class MixedWindows(IterableDataset):
    """Endless batches mixed by weight; batch N of a rank is the same whenever it is asked for."""

    def __init__(
        self,
        sources: list[Source],
        *,
        t_in: int,
        t_out: int,
        grid: Sequence[int],
        channels: int,
        batch_size: int,
        seed: int,
        rank: int,
        world: int,
        workers: int,
        start_batch: int = 0,
        on_bad: str = "raise",
        pad_value: float = 1.0,
        windows_per_trajectory: int = 1,
        max_bad: int = 20,
        keep_aspect: bool = True,
    ) -> None:
        super().__init__()
        self.keep_aspect = keep_aspect
        self.per_traj = windows_per_trajectory
        self.sources, self.batch_size, self.seed = sources, batch_size, seed
        self.rank, self.world, self.workers, self.start_batch, self.on_bad = (
            rank,
            world,
            max(workers, 1),
            start_batch,
            on_bad,
        )
        self.max_bad = max_bad
        self.t_in, self.t_out, self.grid, self.channels = t_in, t_out, tuple(grid), channels
        self.pad_value = pad_value
        weights = np.array([s.weight for s in sources], dtype=np.float64)
        self.probs = weights / weights.sum()

    def choices(self, slot: int, start: int, count: int) -> np.ndarray:
        """Data-set id of samples ``start .. start + count`` of a slot's stream."""
        first, last = start // CHOICE_BLOCK, (start + count - 1) // CHOICE_BLOCK
        blocks = [
            _rng(self.seed, 7919, slot, b).choice(len(self.sources), CHOICE_BLOCK, p=self.probs)
            for b in range(first, last + 1)
        ]
        flat = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)
        offset = start - first * CHOICE_BLOCK
        return flat[offset : offset + count]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        # The DataLoader hands out batches round-robin starting at worker 0, so after a restart at
        # batch N worker w plays the part that worker (w + N) % workers had: it makes batches b = role mod workers.
        role = ((info.id if info is not None else 0) + self.start_batch) % self.workers
        slot, n_slots = self.rank * self.workers + role, self.world * self.workers
        done = max(0, (self.start_batch - role + self.workers - 1) // self.workers)
        position = done * self.batch_size
        before = self.choices(slot, 0, position) if position else np.zeros(0, dtype=np.int64)
        starts = np.bincount(before, minlength=len(self.sources))
        # pick p of a data set is window p % K of its trajectory p // K: resuming is the same arithmetic
        k = self.per_traj
        streams = [
            SourceStream(s, self.seed, slot, n_slots, int(starts[s.id]) // k, self.on_bad, self.max_bad)
            for s in self.sources
        ]
        served = [int(starts[s.id]) % k for s in self.sources]  # windows already cut from the current trajectory
        current: list[tuple[WindowCutter, np.ndarray] | None] = [None] * len(self.sources)
        r, c = self.grid, self.channels
        while True:
            ids = self.choices(slot, position, self.batch_size)
            # windows are written straight into the batch: no per-window tensors, no stacking pass
            x = torch.empty(self.batch_size, *r, self.t_in, c)
            y = torch.empty(self.batch_size, *r, self.t_out, c)
            masks, index = torch.empty(self.batch_size, *r, 1, c), []
            extent = torch.empty(self.batch_size, len(r), dtype=torch.long)
            for i, d in enumerate(ids):
                if current[d] is None or served[d] == k:
                    traj, rng = next(streams[d])  # decoded once, cut into k windows
                    cutter = WindowCutter(
                        traj,
                        self.t_in,
                        self.t_out,
                        r,
                        c,
                        self.pad_value,
                        scored=self.sources[d].scored,
                        keep_aspect=self.keep_aspect,
                    )
                    current[d] = (cutter, cutter.starts(rng, k))
                    served[d] = served[d] if served[d] < k else 0
                cutter, t0s = current[d]
                cutter.window_into(int(t0s[served[d]]), x[i], y[i])
                masks[i] = cutter.mask
                extent[i] = torch.as_tensor(cutter.extent)
                served[d] += 1
                index.append(cutter.traj.index)
            position += self.batch_size
            yield {
                "x": x,
                "y": y,
                "mask": masks,
                "extent": extent,
                "dataset_id": torch.as_tensor(ids, dtype=torch.long),
                "traj_index": torch.as_tensor(index, dtype=torch.long),
                "skipped": torch.tensor(sum(s.skipped for s in streams)),
            }


def loader_workers(configured: int | None) -> int:
    """``data.workers``, or when unset: 4 per rank on a GPU machine, bounded by the cores each local rank has."""
    if configured is not None:
        return configured
    if not torch.cuda.is_available():
        return 0
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", torch.cuda.device_count() or 1))
    return max(0, min(4, (os.cpu_count() or 1) // max(local_ranks, 1) - 1))


class TrainLoader:
    """The train split's batches for one rank, from sources opened once by the caller.

    :meth:`restart` starts the stream at any micro-batch (resume, rollback) without opening the data again.
    On a GPU the batches come from worker processes (``data.workers``) into pinned memory, several batches
    ahead, so that the host-to-device copy can overlap the step."""

    def __init__(self, cfg: RunConfig, sources: list[Source], rank: int, world: int) -> None:
        self.cfg, self.sources, self.rank, self.world = cfg, sources, rank, world

    def loader(self, start_batch: int = 0) -> DataLoader:
        """A DataLoader whose first batch is micro-batch ``start_batch`` of this rank's stream."""
        cfg, m = self.cfg, self.cfg.model
        workers = loader_workers(cfg.data.workers)
        stream = MixedWindows(
            self.sources,
            t_in=m.t_in,
            t_out=cfg.train.target_frames(m.t_out),
            grid=m.grid,
            channels=m.channels,
            batch_size=cfg.train.micro_batch_per_rank,
            seed=cfg.train.seed,
            rank=self.rank,
            world=self.world,
            workers=workers,
            start_batch=start_batch,
            on_bad=cfg.data.on_bad_sample,
            max_bad=cfg.data.max_bad_samples,
            pad_value=cfg.data.pad_value,
            windows_per_trajectory=cfg.data.windows_per_trajectory,
            keep_aspect=cfg.data.resize == "keep_aspect",
        )
        return DataLoader(
            stream,
            batch_size=None,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            prefetch_factor=4 if workers else None,
        )

    def restart(self, start_batch: int) -> Iterator[dict[str, torch.Tensor]]:
        """The batches from micro-batch ``start_batch`` on (``step * grad_accum`` after a resume or rollback)."""
        return iter(self.loader(start_batch))
