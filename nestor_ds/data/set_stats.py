"""``model.normalize: stats``: each data set's channels in units of its own train-split mean and std.

The shard manifests count every value of a split per channel (``mean``, ``std``); a model trained with
``stats`` sees ``(x - mean) / std`` of the sample's own set, predicts in those units, and its prediction is
scaled back before the loss, the metrics and the feedback, so nothing downstream changes units. Padded
channels keep mean 0 and std 1 (they stay the pad value); a channel constant in the data (std 0) is divided
by the floor ``MIN_STD`` instead, as the Well's z-score normalisation does with its ``min_denom``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

MIN_STD = 1e-4


@dataclass(frozen=True)
class SetStats:
    """Channel mean and std per data set, ``[sets, C]``, in the model's channel layout."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def of(cls, stats: Sequence[tuple[Sequence[float], Sequence[float]]], channels: int) -> "SetStats":
        """From each set's (mean, std) lists as the manifests store them (shorter lists: padded channels)."""
        mean, std = torch.zeros(len(stats), channels), torch.ones(len(stats), channels)
        for i, (m, s) in enumerate(stats):
            n = min(len(m), channels)
            mean[i, :n] = torch.tensor(list(m)[:n], dtype=torch.float32)
            std[i, :n] = torch.tensor(list(s)[:n], dtype=torch.float32).clamp_min(MIN_STD)
        return cls(mean, std)

    def to(self, device: torch.device | str) -> "SetStats":
        """The same statistics on ``device`` (moved once, not on every forward)."""
        return SetStats(self.mean.to(device), self.std.to(device))

    def _view(self, which: torch.Tensor, ids: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        rows = which.to(like.device, like.dtype)[ids]
        rows = rows.view(1, -1) if rows.dim() == 1 else rows
        return rows.view(rows.shape[0], *[1] * (like.dim() - 2), rows.shape[-1])

    def to_model(self, x: torch.Tensor, ids: torch.Tensor | int) -> torch.Tensor:
        """[B, *space, T, C] fields of sets ``ids`` ([B], or one set for all) -> the model's units."""
        return (x - self._view(self.mean, ids, x)) / self._view(self.std, ids, x)

    def from_model(self, y: torch.Tensor, ids: torch.Tensor | int) -> torch.Tensor:
        """A prediction in the model's units -> the data's units."""
        return y * self._view(self.std, ids, y) + self._view(self.mean, ids, y)
