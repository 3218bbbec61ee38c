"""Auto-regressive prediction on a user's own fields, prepared as the model's training data was.

The fields are resized (bilinear, trilinear in 3-D, ``align_corners=False``) to the model's grid (to the
region with their own aspect ratio under ``data.resize: keep_aspect``, the rest padding) and their
channels padded with the training pad value, exactly as the loader prepares a training window; the
model predicts ``t_out`` frames at a time from the last ``t_in``, fed back by the evaluator's rule
(``data.feedback``: padded channels at the pad value, input-only ones from the given frames, else the last
one held); the predictions (input-only channels: the values the model was given) are resized back to the
user's grid, the padded channels dropped and, given a geometry mask, zeroed outside the domain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from nestor_ds.config import ConfigError
from nestor_ds.data.feedback import INPUT_ONLY, PADDED, PREDICTED, Feedback, inside_region
from nestor_ds.data.loader import fit, region, resize
from nestor_ds.data.set_stats import SetStats


class Predictor:
    """``Predictor("runs/x/model").rollout(fields, steps)``; fields ``[*space, T, C]`` or ``[B, *space, T, C]``
    with the model's number of space axes (numpy or torch, any grid, T >= t_in: the first t_in frames start
    the rollout)."""

    def __init__(
        self,
        model: str | Path | torch.nn.Module,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        from nestor_ds.inference.model_io import load_model

        self.model = load_model(model, device, dtype) if isinstance(model, (str, Path)) else model
        cfg = getattr(self.model, "run_config", None)
        if cfg is None:
            raise ConfigError("the model carries no run config: load it with nestor_ds.load_model")
        self.cfg, self.device, self.dtype = cfg, torch.device(device), dtype

    @staticmethod
    def _regrid(x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """[B, *space, T, C] -> [B, *grid, T, C] by the loader's resize."""
        b, t = x.shape[0], x.shape[-2]
        frames = x.movedim(-2, 1).movedim(-1, 2).flatten(0, 1)  # [(B T), C, *space]
        return resize(frames, grid).unflatten(0, (b, t)).movedim(1, -1).movedim(1, -1)

    def _extent(self, space: Sequence[int]) -> tuple[int, ...]:
        """The region of the model grid fields on ``space`` fill (``data.resize``, as in training)."""
        return fit(space, self.cfg.model.grid, self.cfg.data.resize == "keep_aspect")

    def _to_model_grid(self, x: torch.Tensor) -> torch.Tensor:
        """[B, *space, T, c] -> [B, *grid, T, C_model]: resized into the region, the rest padding."""
        m, pad = self.cfg.model, float(self.cfg.data.pad_value)
        extent = self._extent(x.shape[1:-2])
        full = x.new_full((x.shape[0], *m.grid, x.shape[-2], m.channels), pad)
        full[(slice(None),) + region(extent)][..., : x.shape[-1]] = self._regrid(x, extent)
        return full

    def _to_user_grid(self, y: torch.Tensor, grid: tuple[int, ...], channels: int) -> torch.Tensor:
        inside = (slice(None), *region(self._extent(grid)))
        return self._regrid(y[inside][..., :channels], grid)

    def channel_positions(self, channels: Sequence[int | str], dataset: str | None) -> list[int]:
        """Model channel of each input channel: positions as given, names looked up in a training data set's
        channel order (``dataset``; default: the only data set, or the one whose channels hold all names)."""
        if all(isinstance(c, int) for c in channels):
            return [int(c) for c in channels]
        known: dict[str, list[str]] = getattr(self.model, "channel_names", {}) or {}
        candidates = [dataset] if dataset else [d for d, names in known.items() if set(channels) <= set(names)]
        if dataset and dataset not in known:
            raise ConfigError(
                f"channel names of data set {dataset!r} are unknown; known: {sorted(known) or 'none'} "
                f"(give channels by position)"
            )
        if len(candidates) != 1:
            raise ConfigError(
                f"channels {list(channels)}: {'several' if candidates else 'no'} training data sets "
                f"match ({candidates or sorted(known)}); pass dataset= or positions"
            )
        names = known[candidates[0]]
        missing = [c for c in channels if c not in names]
        if missing:
            raise ConfigError(f"data set {candidates[0]!r} has channels {names}, not {missing}")
        return [names.index(str(c)) for c in channels]

    def roles(self, order: list[int], dataset: str | None = None) -> torch.Tensor:
        """``data.feedback`` roles of the model's channels for input channels placed at ``order``: channels not
        given are padding; given ones are predicted, except those past the data set's predicted channels
        (``dataset``, or the only training data set), which are input only (held from the given frames)."""
        names = [d.name for d in self.cfg.data.datasets]
        name = dataset if dataset is not None else names[0] if len(names) == 1 else None
        predicted = None
        if name is not None:
            try:
                predicted = self.cfg.data.info(name).predicted_channels
            except ValueError:
                predicted = None  # a data set the model was not trained on: everything given is predicted
        roles = torch.full((self.cfg.model.channels,), PADDED, dtype=torch.int8)
        for position in order:
            roles[position] = INPUT_ONLY if predicted is not None and position >= predicted else PREDICTED
        return roles

    def _forward(self, dataset: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The model on fields in the data's units (``model.normalize: stats``: the set's train-split units)."""
        if self.cfg.model.normalize != "stats":
            return lambda x: self.model(x).pred
        known: dict = getattr(self.model, "set_stats", {}) or {}
        names = [d.name for d in self.cfg.data.datasets]
        name = dataset if dataset is not None else names[0] if len(names) == 1 else None
        if name is None or name not in known:
            raise ConfigError(
                f"this model works in each data set's own units (model.normalize=stats): pass dataset= one of "
                f"{sorted(known) or names} (statistics for {name!r} are not known)"
            )
        units = SetStats.of([(known[name]["mean"], known[name]["std"])], self.cfg.model.channels).to(self.device)
        return lambda x: units.from_model(self.model(units.to_model(x, 0)).pred, 0)

    @torch.no_grad()
    def rollout(
        self,
        fields: np.ndarray | torch.Tensor,
        steps: int,
        channels: Sequence[int | str] | None = None,
        mask: np.ndarray | torch.Tensor | None = None,
        dataset: str | None = None,
    ) -> np.ndarray | torch.Tensor:
        """``steps`` predicted frames after the first t_in, on the input's grid: [(B,) *space, steps, C].

        ``channels``: which model channel each input channel is, by position or by name in a training data set's
        channel order (``dataset``); default 0..C-1, as the data set's channels were stored. ``mask`` [*space]:
        1 inside the domain, predictions are 0 outside."""
        m = self.cfg.model
        as_numpy = isinstance(fields, np.ndarray)
        x = torch.as_tensor(np.asarray(fields) if as_numpy else fields).float()
        single = x.dim() == m.dims + 2
        if single:
            x = x[None]
        if x.dim() != m.dims + 3:
            axes = ", ".join("XYZ"[: m.dims])
            raise ConfigError(
                f"fields must be [{axes}, T, C] or [B, {axes}, T, C] for this {m.dims}-D model, got shape "
                f"{tuple(fields.shape)}"
            )
        b, space, t, c = x.shape[0], tuple(x.shape[1:-2]), x.shape[-2], x.shape[-1]
        if t < m.t_in:
            raise ConfigError(f"fields have {t} frames; the model needs t_in={m.t_in} to start")
        if steps < 1:
            raise ConfigError(f"steps must be at least 1, got {steps}")
        order = list(range(c)) if channels is None else self.channel_positions(list(channels), dataset)
        if len(order) != c or len(set(order)) != c or min(order) < 0 or max(order) >= m.channels:
            raise ConfigError(f"channels {order} must place the {c} input channels among the model's {m.channels}")
        placed = torch.full((b, *space, t, max(order) + 1), float(self.cfg.data.pad_value))
        placed[..., order] = x
        given = self._to_model_grid(placed).to(self.device, self.dtype)  # input-only channels' truth, where given
        extent = self._extent(space)
        feedback = Feedback(
            self.roles(order, dataset).to(self.device),
            float(self.cfg.data.pad_value),
            None if extent == tuple(m.grid) else inside_region(torch.tensor(extent), tuple(m.grid)),
        )
        window = given[..., : m.t_in, :]
        forward = self._forward(dataset)
        preds, done = [], 0
        while done < steps:
            y = forward(window)  # [B, *grid, t_out, C_model]
            truth = given[..., m.t_in + done : m.t_in + done + y.shape[-2], :]
            fed = truth if truth.shape[-2] == y.shape[-2] else None
            preds.append(feedback.frames(y, fed, window).float())  # input-only channels: what the model was given
            window = feedback.next_window(window, y.to(window.dtype), fed)
            done += y.shape[-2]
        out = torch.cat(preds, dim=-2)[..., :steps, :].cpu()
        out = self._to_user_grid(out, space, max(order) + 1)[..., order]
        if mask is not None:
            out = out * torch.as_tensor(np.asarray(mask), dtype=out.dtype)[None, ..., None, None]
        out = out[0] if single else out
        return out.numpy() if as_numpy else out
