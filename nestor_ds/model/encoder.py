"""DPOT's encoder (grid channels, patch embedding, ``exp_mlp`` time aggregation, optional
per-sample normalisation) and its output head, shared by every variant, in 2-D or 3-D.

Each piece computes what thu-ml/DPOT ``models/dpot.py`` (2-D) and ``models/dpot3d.py`` (3-D)
compute, so published DPOT and MoE-POT weights load by renaming alone (see ``model/published.py``).
Fields are ``[B, *space, T, C]`` and token maps ``[B, D, *latent]`` whatever the number of axes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nestor_ds.config.schema import ModelConfig


def conv(dims: int) -> type[nn.Conv2d | nn.Conv3d]:
    """The convolution of a ``dims``-D model (DPOT: Conv2d; DPOT-3D: Conv3d)."""
    return nn.Conv3d if dims == 3 else nn.Conv2d


def conv_transpose(dims: int) -> type[nn.ConvTranspose2d | nn.ConvTranspose3d]:
    """The transposed convolution of a ``dims``-D model's head."""
    return nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d


class PatchEmbed(nn.Module):
    """Conv (kernel = stride = patch) to ``C_out * patch + dims + 1`` channels, GELU, 1x1 conv to D (DPOT's)."""

    def __init__(self, in_channels: int, hidden: int, width: int, patch: int | tuple[int, ...], dims: int = 2) -> None:
        super().__init__()
        k: Any = patch  # an edge for every axis, or one per axis
        self.proj = nn.Sequential(
            conv(dims)(in_channels, hidden, kernel_size=k, stride=k),
            nn.GELU(),
            conv(dims)(hidden, width, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class TimeAggregator(nn.Module):
    """DPOT's ``exp_mlp``: sum_t (x_t * cos(t * gamma)) @ W_t, with learnable per-channel frequencies gamma."""

    def __init__(self, t_in: int, width: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(t_in, width, width) / (t_in * width**0.5))
        self.gamma = nn.Parameter(2 ** torch.linspace(-10, 10, width).unsqueeze(0))  # [1, D]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, *latent, T, D] -> [B, *latent, D]
        t = torch.linspace(0, 1, x.shape[-2], device=x.device).unsqueeze(-1)
        # fp32: gamma reaches 2^10, and cos of a bf16 product of that size is noise
        t_embed = torch.cos(t @ self.gamma.float()).to(x.dtype)  # [T, D]
        return torch.einsum("tij,...ti->...j", self.w.to(x.dtype), x * t_embed)


def _grid(n: int, device: torch.device) -> torch.Tensor:
    # DPOT builds the grid with numpy in float64 and casts; do the same for identical values
    return torch.linspace(0, 1, n, dtype=torch.float64, device=device).float()


class SpatioTemporalEncoder(nn.Module):
    """[B, *space, T_in, C] fields -> [B, D, *space/p] token map, plus (mu, sigma) when normalising."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        p, d = cfg.patch, cfg.dims
        extra = d + 1  # one grid channel per space axis and one for time (DPOT: 3, DPOT-3D: 4)
        hidden = cfg.embed_width or cfg.channels * max(p) + extra  # DPOT's C * patch + 3 (longest edge per axis)
        self.patch_embed = PatchEmbed(cfg.channels + extra, hidden, cfg.width, p, d)
        self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, cfg.width, *cfg.latent), std=0.02))
        self.time_agg = TimeAggregator(cfg.t_in, cfg.width)
        self.normalize = cfg.normalize == "sample"  # "stats" happens outside the model, on the data's units
        self._grids: dict[tuple, torch.Tensor] = {}
        if self.normalize:
            self.scale_feats_mu = nn.Linear(2 * cfg.channels, cfg.width)
            self.scale_feats_sigma = nn.Linear(2 * cfg.channels, cfg.width)

    def _grid(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """[*space, T, dims + 1] coordinates on [0, 1], built once per shape."""
        key = (*shape, device, dtype)
        if key not in self._grids:
            axes = torch.meshgrid(*(_grid(n, device) for n in shape), indexing="ij")
            self._grids[key] = torch.stack(axes, dim=-1).to(dtype)
        return self._grids[key]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        b, t = x.shape[0], x.shape[-2]
        stats = None
        if self.normalize:
            over = tuple(range(1, x.dim() - 1))  # space and time
            mu = x.mean(dim=over, keepdim=True)  # [B, 1, .., 1, C]
            sigma = x.std(dim=over, keepdim=True) + 1e-6
            x = (x - mu) / sigma
            feats = torch.cat([mu, sigma], dim=-1).flatten(1)  # [B, 2C]
            stats = (mu, sigma)
        grid = self._grid(tuple(x.shape[1:-1]), x.device, x.dtype)
        x = torch.cat([x, grid.expand(b, *grid.shape)], dim=-1)
        frames = x.movedim(-2, 1).movedim(-1, 2).flatten(0, 1)  # [(B T), C + dims + 1, *space]
        tokens = self.patch_embed(frames) + self.pos_embed  # [(B T), D, *latent]
        z = self.time_agg(tokens.unflatten(0, (b, t)).movedim(1, -1).movedim(1, -1))  # [B, *latent, D]
        z = z.movedim(-1, 1)  # [B, D, *latent]
        if self.normalize:
            view = (b, -1) + (1,) * (z.dim() - 2)
            z = self.scale_feats_sigma(feats).view(view) * z + self.scale_feats_mu(feats).view(view)
        return z, stats


class OutputHead(nn.Module):
    """Transposed conv back to the grid, GELU, 1x1 conv, GELU, 1x1 conv to C * T_out channels."""

    def __init__(
        self, width: int, hidden: int, patch: int | tuple[int, ...], channels: int, t_out: int, dims: int = 2
    ) -> None:
        super().__init__()
        self.channels, self.t_out = channels, t_out
        k: Any = patch
        self.out_layer = nn.Sequential(
            conv_transpose(dims)(width, hidden, kernel_size=k, stride=k),
            nn.GELU(),
            conv(dims)(hidden, hidden, kernel_size=1),
            nn.GELU(),
            conv(dims)(hidden, channels * t_out, kernel_size=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # [B, D, *latent] -> [B, *space, T_out, C]
        return self.out_layer(z).movedim(1, -1).unflatten(-1, (self.t_out, self.channels))


class DatasetClassifier(nn.Module):
    """DPOT's ``cls_head`` on the mean token: which data set a sample comes from (weight 0 in DPOT's recipe)."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(width, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, classes)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z.mean(dim=tuple(range(2, z.dim()))))


__all__ = [
    "DatasetClassifier",
    "OutputHead",
    "PatchEmbed",
    "SpatioTemporalEncoder",
    "TimeAggregator",
    "conv",
    "conv_transpose",
]
