"""Whole test trajectories from shards, resized to the common grid, for evaluation."""
from __future__ import annotations

from typing import Iterator

import torch

from nestor_ds.data.loader import Source, common_grid
from nestor_ds.data.shards import decode_sample, iter_raw_samples
from nestor_ds.data.trajectory import Trajectory


def iter_split(src: Source, limit: int | None = None) -> Iterator[Trajectory]:
    """Every trajectory of a split, in manifest order (deterministic on every rank)."""
    n = 0
    for shard in src.manifest["shards"]:
        for raw in iter_raw_samples(src.folder / shard["name"]):
            if limit is not None and n >= limit:
                return
            yield decode_sample(raw, src.manifest["channels"])
            n += 1


def to_common_grid(traj: Trajectory, resolution: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole trajectory [X, X, T, C_common] and its mask [X, X, 1, C_common] (1 = real point and channel)."""
    return common_grid(traj.data, traj.mask, resolution, channels)
