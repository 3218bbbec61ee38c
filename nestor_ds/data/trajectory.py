"""The unit every reader yields and every shard stores: one trajectory and its metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Trajectory:
    """``data`` is ``[T, X, Y, C]`` or ``[T, X, Y, Z, C]`` float32 (time first, channels last); ``mask``
    (optional) is the grid ``[X, Y(, Z)]`` with 1 on real (fluid) points; ``dz`` is set for 3-D data only;
    ``predicted`` (optional) counts the leading channels that evolve, the others being input-only conditioning."""

    dataset: str
    index: int
    data: np.ndarray
    channels: list[str]
    dt: float
    dx: float
    dy: float
    conditioning: dict[str, float] = field(default_factory=dict)
    mask: np.ndarray | None = None
    dz: float | None = None
    predicted: int | None = (
        None  # leading channels a model predicts, where the source says (the Well); the rest input only
    )

    def __post_init__(self) -> None:
        if self.data.ndim not in (4, 5):
            raise ValueError(
                f"{self.dataset}[{self.index}]: data must be [T, X, Y, C] or [T, X, Y, Z, C], got shape "
                f"{self.data.shape}"
            )
        if (self.data.ndim == 5) != (self.dz is not None):
            raise ValueError(f"{self.dataset}[{self.index}]: dz must be given for 3-D data, and only for it")
        if self.data.shape[-1] != len(self.channels):
            raise ValueError(
                f"{self.dataset}[{self.index}]: {self.data.shape[-1]} channels in data but names {self.channels}"
            )
        self.data = np.ascontiguousarray(self.data, dtype=np.float32)
        if self.mask is not None and self.mask.shape != self.grid:
            raise ValueError(f"{self.dataset}[{self.index}]: mask {self.mask.shape} does not match grid {self.grid}")

    @property
    def grid(self) -> tuple[int, ...]:
        """The space axes' sizes, ``(X, Y)`` or ``(X, Y, Z)``."""
        return tuple(self.data.shape[1:-1])

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
            **({"dz": self.dz} if self.dz is not None else {}),
            "conditioning": self.conditioning,
            "has_mask": self.mask is not None,
            **({"predicted": self.predicted} if self.predicted is not None else {}),
        }
