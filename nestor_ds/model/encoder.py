"""DPOT's encoder (grid channels, patch embedding, ``exp_mlp`` time aggregation, optional
per-sample normalisation) and its output head, shared by every variant.

Each piece computes what thu-ml/DPOT ``models/dpot.py`` computes, so published DPOT and
MoE-POT weights load by renaming alone (see ``model/published.py``).
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import nn

from nestor_ds.config.schema import ModelConfig


class PatchEmbed(nn.Module):
    """Conv (kernel = stride = patch) to ``C_out * patch + 3`` channels, GELU, 1x1 conv to D (DPOT's widths)."""

    def __init__(self, in_channels: int, hidden: int, width: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch),
            nn.GELU(),
            nn.Conv2d(hidden, width, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class TimeAggregator(nn.Module):
    """DPOT's ``exp_mlp``: sum_t (x_t * cos(t * gamma)) @ W_t, with learnable per-channel frequencies gamma."""

    def __init__(self, t_in: int, width: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(t_in, width, width) / (t_in * width**0.5))
        self.gamma = nn.Parameter(2 ** torch.linspace(-10, 10, width).unsqueeze(0))  # [1, D]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, X, Y, T, D] -> [B, X, Y, D]
        t = torch.linspace(0, 1, x.shape[-2], device=x.device).unsqueeze(-1)
        # fp32: gamma reaches 2^10, and cos of a bf16 product of that size is noise
        t_embed = torch.cos(t @ self.gamma.float()).to(x.dtype)  # [T, D]
        return torch.einsum("tij,...ti->...j", self.w.to(x.dtype), x * t_embed)


def _grid(n: int, device: torch.device) -> torch.Tensor:
    # DPOT builds the grid with numpy in float64 and casts; do the same for identical values
    return torch.linspace(0, 1, n, dtype=torch.float64, device=device).float()


class SpatioTemporalEncoder(nn.Module):
    """[B, X, Y, T_in, C] fields -> [B, D, X/p, Y/p] token map, plus (mu, sigma) when normalising."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        p, grid = cfg.patch_size, cfg.resolution // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg.channels + 3, cfg.embed_width or cfg.channels * p + 3, cfg.width, p)
        self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, cfg.width, grid, grid), std=0.02))
        self.time_agg = TimeAggregator(cfg.t_in, cfg.width)
        self.normalize = cfg.normalize
        self._grids: dict[tuple, torch.Tensor] = {}
        if cfg.normalize:
            self.scale_feats_mu = nn.Linear(2 * cfg.channels, cfg.width)
            self.scale_feats_sigma = nn.Linear(2 * cfg.channels, cfg.width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        b, nx, ny, t, _ = x.shape
        stats = None
        if self.normalize:
            mu = x.mean(dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1, C]
            sigma = x.std(dim=(1, 2, 3), keepdim=True) + 1e-6
            x = (x - mu) / sigma
            feats = torch.cat([mu, sigma], dim=-1).flatten(1)  # [B, 2C]
            stats = (mu, sigma)
        key = (nx, ny, t, x.device, x.dtype)
        if key not in self._grids:  # the same for every forward: built once
            self._grids[key] = torch.stack(
                torch.meshgrid(_grid(nx, x.device), _grid(ny, x.device), _grid(t, x.device), indexing="ij"), dim=-1
            ).to(x.dtype)
        grid = self._grids[key]
        x = torch.cat([x, repeat(grid, "x y t c -> b x y t c", b=b)], dim=-1)
        tokens = self.patch_embed(rearrange(x, "b x y t c -> (b t) c x y")) + self.pos_embed
        z = self.time_agg(rearrange(tokens, "(b t) d x y -> b x y t d", b=b))
        z = rearrange(z, "b x y d -> b d x y")
        if self.normalize:
            z = self.scale_feats_sigma(feats)[:, :, None, None] * z + self.scale_feats_mu(feats)[:, :, None, None]
        return z, stats


class OutputHead(nn.Module):
    """Transposed conv back to the grid, GELU, 1x1 conv, GELU, 1x1 conv to C * T_out channels."""

    def __init__(self, width: int, hidden: int, patch: int, channels: int, t_out: int) -> None:
        super().__init__()
        self.channels, self.t_out = channels, t_out
        self.out_layer = nn.Sequential(
            nn.ConvTranspose2d(width, hidden, kernel_size=patch, stride=patch),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, kernel_size=1),
            nn.GELU(),
            nn.Conv2d(hidden, channels * t_out, kernel_size=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return rearrange(self.out_layer(z), "b (t c) x y -> b x y t c", t=self.t_out, c=self.channels)


class DatasetClassifier(nn.Module):
    """DPOT's ``cls_head`` on the mean token: which data set a sample comes from (weight 0 in DPOT's recipe)."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(width, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, classes)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z.mean(dim=(2, 3)))


__all__ = ["DatasetClassifier", "OutputHead", "PatchEmbed", "SpatioTemporalEncoder", "TimeAggregator"]
