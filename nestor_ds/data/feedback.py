"""The one rule by which a predicted frame becomes the next input, in training unrolls, evaluation and
``Predictor`` alike.

Every channel of the model's common channel layout has one role per sample:

- ``PREDICTED``: the model's output is fed back;
- ``INPUT_ONLY``: a channel the model reads but is not asked to predict (CFDBench's geometry mask, a
  conditioning field): it comes from the truth (the data's own next frame, or the last known one);
- ``PADDED``: a channel the data set does not have: set back to ``pad_value``, as the model saw it in training.

Grid points outside a sample's region (a set resized with its own aspect ratio into part of the model
grid, ``data.resize: keep_aspect``) are padding too: set back to ``pad_value``, as the model saw them.

The scoring mask (which points and channels count in a metric) never touches what is fed back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PREDICTED, INPUT_ONLY, PADDED = 0, 1, 2


def channel_roles(real: int, predicted: int | None, channels: int) -> torch.Tensor:
    """Roles [channels] (int8) of a data set with ``real`` channels of which the first ``predicted`` (None: all)
    are predicted, padded to the model's ``channels``."""
    if real > channels:
        raise ValueError(f"{real} real channels do not fit the model's {channels}")
    roles = torch.full((channels,), PADDED, dtype=torch.int8)
    roles[:real] = INPUT_ONLY
    roles[: min(real, predicted if predicted is not None else real)] = PREDICTED
    return roles


def inside_region(extent: torch.Tensor, space: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """[B or 1, *space, 1, 1] bool: True on the grid points of each sample's region, ``extent`` [B, space axes]
    (or [space axes] for all) placed at the origin (``data.loader.fit``)."""
    e = extent.view(1, -1) if extent.dim() == 1 else extent
    inside = torch.ones(e.shape[0], *space, dtype=torch.bool, device=e.device)
    for axis, n in enumerate(space):
        shape = [1] * (1 + len(space))
        shape[1 + axis] = n
        inside = inside & (torch.arange(n, device=e.device).view(shape) < e[:, axis].view(-1, *[1] * len(space)))
    return inside[..., None, None]


@dataclass(frozen=True)
class Feedback:
    """How to build the next input window: roles [B, C] per sample (or [C] for all), the pad value, and
    optionally where each sample's data is, ``inside`` [B or 1, *space, 1, 1] (:func:`inside_region`)."""

    roles: torch.Tensor
    pad_value: float = 1.0
    inside: torch.Tensor | None = None

    def _role(self, code: int, like: torch.Tensor) -> torch.Tensor:
        r = self.roles.to(like.device)
        r = r.view(1, -1) if r.dim() == 1 else r
        return (r == code).view((r.shape[0],) + (1,) * (like.dim() - 2) + (r.shape[1],))

    def frames(self, pred: torch.Tensor, truth: torch.Tensor | None, window: torch.Tensor) -> torch.Tensor:
        """The frames fed back for ``pred`` [B, *space, t, C]: predicted channels from ``pred``, input-only ones from
        ``truth`` (the true frames at the same times; None: the window's last frame, held), padded ones at
        ``pad_value``."""
        if truth is None:
            truth = window[..., -1:, :].expand_as(pred)
        out = torch.where(self._role(PREDICTED, pred), pred, truth.to(pred.dtype))
        out = out.masked_fill(self._role(PADDED, pred), self.pad_value)
        return out if self.inside is None else out.masked_fill(~self.inside.to(pred.device), self.pad_value)

    def next_window(self, window: torch.Tensor, pred: torch.Tensor, truth: torch.Tensor | None = None) -> torch.Tensor:
        """Slide ``window`` [B, *space, t_in, C] on by the predicted frames, keeping its length."""
        fed = self.frames(pred, truth, window).to(window.dtype)
        return torch.cat([window, fed], dim=-2)[..., -window.shape[-2] :, :]
