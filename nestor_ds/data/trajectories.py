"""Whole test trajectories from shards, resized to the common grid, for evaluation."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from nestor_ds.data.loader import Source
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
    """Whole trajectory [T, X, X, C_common] and its mask [X, X, 1, C_common] (1 = real point and channel)."""
    frames = torch.from_numpy(traj.data).permute(0, 3, 1, 2)
    if frames.shape[-2:] != (resolution, resolution):
        frames = F.interpolate(frames, size=(resolution, resolution), mode="bilinear", align_corners=False)
    t, c = frames.shape[0], frames.shape[1]
    full = frames.new_zeros(t, channels, resolution, resolution)
    full[:, :c] = frames
    points = torch.ones(1, 1, *traj.data.shape[1:3]) if traj.mask is None else \
        torch.from_numpy(traj.mask.astype(np.float32))[None, None]
    points = F.interpolate(points, size=(resolution, resolution), mode="nearest")[0, 0]
    mask = torch.zeros(resolution, resolution, 1, channels)
    mask[..., :c] = points[:, :, None, None]
    return full.permute(0, 2, 3, 1).contiguous(), mask
