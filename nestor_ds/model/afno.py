"""Adaptive Fourier neural operator pieces (DPOT style): spectral block-diagonal complex MLP."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ContiguousGroupNorm(nn.GroupNorm):
    """GroupNorm on a contiguous input: torch 2.13's CPU backward segfaults on a permuted input that
    needs no gradient (what a frozen encoder hands the first block)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.contiguous())


def group_norm(width: int) -> nn.GroupNorm:
    return ContiguousGroupNorm(8 if width % 8 == 0 else 1, width)


class AFNOFilter(nn.Module):
    """Complex two-layer MLP, block-diagonal over channels, on the lowest ``modes`` Fourier modes."""

    def __init__(self, width: int, blocks: int, modes: int, hidden_factor: int = 1, shrink: float = 0.01) -> None:
        super().__init__()
        if width % blocks:
            raise ValueError(f"AFNO width {width} is not divisible by blocks {blocks}")
        self.blocks, self.modes, self.shrink = blocks, modes, shrink
        bs, hs = width // blocks, width // blocks * hidden_factor
        scale = 0.02
        self.w1 = nn.Parameter(scale * torch.randn(2, blocks, bs, hs))
        self.b1 = nn.Parameter(scale * torch.randn(2, blocks, hs))
        self.w2 = nn.Parameter(scale * torch.randn(2, blocks, hs, bs))
        self.b2 = nn.Parameter(scale * torch.randn(2, blocks, bs))

    @staticmethod
    def _cmul(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(xr + i xi)(wr + i wi) + b for block-diagonal weights; x: [..., blocks, n] complex."""
        w = torch.complex(w[0], w[1])
        b = torch.complex(b[0], b[1])
        return torch.einsum("...bi,bio->...bo", x, w) + b

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, D, H, W]
        dtype = x.dtype
        x = x.float()
        b, d, h, w = x.shape
        xf = torch.fft.rfft2(x, dim=(2, 3), norm="ortho")  # [B, D, H, W//2+1]
        xf = xf.permute(0, 2, 3, 1).reshape(b, h, w // 2 + 1, self.blocks, d // self.blocks)
        m = min(self.modes, w // 2 + 1)
        rows = torch.arange(h, device=x.device)
        keep = (rows < self.modes) | (rows >= h - self.modes)  # low |k_x|, both signs
        sel = xf[:, keep, :m]
        y = self._cmul(sel, self.w1.float(), self.b1.float())
        y = torch.complex(F.relu(y.real), F.relu(y.imag))
        y = self._cmul(y, self.w2.float(), self.b2.float())
        y = torch.complex(F.softshrink(y.real, self.shrink), F.softshrink(y.imag, self.shrink))
        out = torch.zeros_like(xf)
        out[:, keep, :m] = y
        out = out.reshape(b, h, w // 2 + 1, d).permute(0, 3, 1, 2)
        return torch.fft.irfft2(out, s=(h, w), dim=(2, 3), norm="ortho").to(dtype)


class ChannelMLP(nn.Module):
    """1x1-conv MLP with GELU (DPOT's channel mixer)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(width, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SharedAFNO(nn.Module):
    """NESTOR's always-on global path: spectral filter, then a normalised channel MLP (no outer skip)."""

    def __init__(self, width: int, blocks: int, modes: int, hidden: int) -> None:
        super().__init__()
        self.filter = AFNOFilter(width, blocks, modes)
        self.norm = group_norm(width)
        self.mlp = ChannelMLP(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.filter(x)
        return s + self.mlp(self.norm(s))
