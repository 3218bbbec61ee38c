"""Spatio-temporal encoder (grid channels, patch embedding, temporal aggregation) and output head."""
from __future__ import annotations

import math

import torch
from einops import rearrange, repeat
from torch import nn


class PatchEmbed(nn.Module):
    """Conv with kernel = stride = patch, GELU, 1x1 conv to the token width."""

    def __init__(self, in_channels: int, width: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=patch, stride=patch),
            nn.GELU(),
            nn.Conv2d(width, width, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class TemporalAggregator(nn.Module):
    """Collapse T_in token maps into one: per-frame D x D weights scaled by Fourier features of t."""

    def __init__(self, t_in: int, width: int, n_freq: int = 8) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(t_in, width, width) / (t_in * math.sqrt(width)))
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freq, dtype=torch.float32) * math.pi, persistent=False)
        self.modulation = nn.Linear(2 * n_freq, width)
        self.register_buffer("t", torch.linspace(0, 1, t_in), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, D, H, W]
        phase = self.t[:, None] * self.freqs[None, :]
        feats = torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)
        scale = 1.0 + self.modulation(feats.to(x.dtype))  # [T, D]
        return torch.einsum("btihw,ti,tij->bjhw", x, scale, self.weight.to(x.dtype))


class SpatioTemporalEncoder(nn.Module):
    """[B, X, Y, T_in, C] fields -> [B, D, X/p, Y/p] token map."""

    def __init__(self, channels: int, t_in: int, width: int, patch: int, resolution: int) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(channels + 3, width, patch)
        grid = resolution // patch
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, width, grid, grid))
        self.aggregate = TemporalAggregator(t_in, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, nx, ny, t, _ = x.shape
        gx = torch.linspace(0, 1, nx, device=x.device, dtype=x.dtype)
        gy = torch.linspace(0, 1, ny, device=x.device, dtype=x.dtype)
        gt = torch.linspace(0, 1, t, device=x.device, dtype=x.dtype)
        grid = torch.stack(torch.meshgrid(gx, gy, gt, indexing="ij"), dim=-1)  # [X, Y, T, 3]
        x = torch.cat([x, repeat(grid, "x y t c -> b x y t c", b=b)], dim=-1)
        frames = rearrange(x, "b x y t c -> (b t) c x y")
        tokens = self.patch_embed(frames) + self.pos_embed
        return self.aggregate(rearrange(tokens, "(b t) d h w -> b t d h w", b=b))


class OutputHead(nn.Module):
    """Transposed conv back to the grid, then two 1x1 convs to C * T_out channels."""

    def __init__(self, width: int, hidden: int, patch: int, channels: int, t_out: int) -> None:
        super().__init__()
        self.channels, self.t_out = channels, t_out
        self.up = nn.ConvTranspose2d(width, hidden, kernel_size=patch, stride=patch)
        self.mix = nn.Sequential(
            nn.Conv2d(hidden, hidden, kernel_size=1), nn.GELU(), nn.Conv2d(hidden, channels * t_out, kernel_size=1)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.mix(self.up(z))
        return rearrange(y, "b (t c) x y -> b x y t c", t=self.t_out, c=self.channels)
