"""Whole test trajectories from shards, resized to the common grid, for evaluation."""

from __future__ import annotations

from typing import Iterator

import torch

from nestor_ds.data.loader import Source, common_grid
from nestor_ds.data.shards import decode_sample, iter_raw_samples, needs_whole_read
from nestor_ds.data.trajectory import Trajectory


def iter_split(src: Source, limit: int | None = None) -> Iterator[Trajectory]:
    """The split's first ``src.limit`` (and at most ``limit``) trajectories, in manifest order, on every rank."""
    cap = src.limit if limit is None else min(limit, src.limit)
    n = 0
    for shard in range(len(src.manifest["shards"])):
        url, sha256 = src.url(shard), src.sha256(shard)
        if n >= cap and not needs_whole_read(url, sha256):
            return
        for raw in iter_raw_samples(url, sha256):  # checked on first open in this process
            if n < cap:
                yield decode_sample(raw, src.manifest["channels"])
                n += 1
            elif not needs_whole_read(url, sha256):
                return


def to_common_grid(
    traj: Trajectory, src: Source, resolution: int, channels: int, pad_value: float = 1.0, points: str = "all"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole trajectory [X, X, T, C_common] and its mask [X, X, 1, C_common] of scored points and channels.

    The evaluator, not this function, cuts the frames to t_in + ``src.rollout``."""
    return common_grid(
        traj.data, traj.mask, resolution, channels, pad_value=pad_value, scored=src.scored, points=points
    )
