"""Forecasts that learn nothing, scored exactly as a model is: the floor every result is read against.

Each maps an input window [B, *space, t_in, C] to ``t_out`` next frames [B, *space, t_out, C], like a model."""

from __future__ import annotations

import torch


def persistence(window: torch.Tensor, t_out: int) -> torch.Tensor:
    """The last input frame, repeated."""
    return window[..., -1:, :].expand(*window.shape[:-2], t_out, window.shape[-1])


def linear_extrapolation(window: torch.Tensor, t_out: int) -> torch.Tensor:
    """``u_t + k (u_t - u_{t-1})`` for k = 1..t_out (one step ahead: ``2 u_t - u_{t-1}``); needs t_in >= 2."""
    if window.shape[-2] < 2:
        raise ValueError(f"linear extrapolation needs at least 2 input frames, got {window.shape[-2]}")
    last, step = window[..., -1:, :], window[..., -1:, :] - window[..., -2:-1, :]
    k = torch.arange(1, t_out + 1, device=window.device, dtype=window.dtype).view(t_out, 1)
    return last + k * step


BASELINES = {"persistence": persistence, "linear": linear_extrapolation}
