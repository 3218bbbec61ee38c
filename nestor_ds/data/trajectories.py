"""Whole test trajectories from shards, resized to the common grid, for evaluation."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from nestor_ds.data.loader import Source, common_grid
from nestor_ds.data.shards import decode_sample, iter_raw_samples, needs_whole_read
from nestor_ds.data.trajectory import Trajectory


def split_size(src: Source, limit: int | None = None) -> int:
    """How many trajectories :func:`iter_split` yields over all ranks: ``src.limit``, at most ``limit``."""
    held = min(src.limit, sum(src.shard_counts))
    return held if limit is None else min(limit, held)


def iter_split(src: Source, limit: int | None = None, rank: int = 0, world: int = 1) -> Iterator[Trajectory]:
    """The split's first ``src.limit`` (and at most ``limit``) trajectories in manifest order; with ``world`` > 1
    only those at positions ``rank, rank + world, ...``, the others neither decoded nor (where whole shards are
    someone else's) read."""
    cap = split_size(src, limit)
    n = 0
    for shard, count in enumerate(src.shard_counts):
        url, sha256 = src.url(shard), src.sha256(shard)
        if n >= cap and not needs_whole_read(url, sha256):
            return
        if not any(i % world == rank for i in range(n, min(n + count, cap))):
            n += count  # none of it is this rank's: not read here (nor checked: nothing of it is used here)
            continue
        for raw in iter_raw_samples(url, sha256):  # checked on first open in this process
            if n < cap and n % world == rank:
                yield decode_sample(raw, src.manifest["channels"])
            n += 1
            if n >= cap and not needs_whole_read(url, sha256):
                return


def to_common_grid(
    traj: Trajectory,
    src: Source,
    grid: Sequence[int],
    channels: int,
    pad_value: float = 1.0,
    points: str = "all",
    keep_aspect: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole trajectory [*grid, T, C_common] and its mask [*grid, 1, C_common] of scored points and channels.

    The evaluator, not this function, cuts the frames to t_in + ``src.rollout``."""
    return common_grid(
        traj.data,
        traj.mask,
        grid,
        channels,
        pad_value=pad_value,
        scored=src.scored,
        points=points,
        keep_aspect=keep_aspect,
    )
