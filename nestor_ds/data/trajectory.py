"""The unit every reader yields and every shard stores: one trajectory and its metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Trajectory:
    """``data`` is ``[T, X, Y, C]`` float32; ``mask`` (optional) is ``[X, Y]`` with 1 on real (fluid) points."""

    dataset: str
    index: int
    data: np.ndarray
    channels: list[str]
    dt: float
    dx: float
    dy: float
    conditioning: dict[str, float] = field(default_factory=dict)
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.data.ndim != 4:
            raise ValueError(f"{self.dataset}[{self.index}]: data must be [T, X, Y, C], got shape {self.data.shape}")
        if self.data.shape[-1] != len(self.channels):
            raise ValueError(
                f"{self.dataset}[{self.index}]: {self.data.shape[-1]} channels in data but names {self.channels}"
            )
        self.data = np.ascontiguousarray(self.data, dtype=np.float32)
        if self.mask is not None and self.mask.shape != self.data.shape[1:3]:
            raise ValueError(
                f"{self.dataset}[{self.index}]: mask {self.mask.shape} does not match grid {self.data.shape[1:3]}"
            )

    def meta(self) -> dict[str, Any]:
        """The trajectory's metadata as stored beside its arrays in a shard."""
        return {
            "dataset": self.dataset,
            "index": self.index,
            "shape": list(self.data.shape),
            "channels": self.channels,
            "dt": self.dt,
            "dx": self.dx,
            "dy": self.dy,
            "conditioning": self.conditioning,
            "has_mask": self.mask is not None,
        }
