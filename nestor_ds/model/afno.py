"""DPOT's adaptive Fourier block: the spectral filter and the AFNO block around it.

Computes what thu-ml/DPOT ``models/dpot.py`` (``AFNO2D``, ``Block``) computes: the
filter keeps the first ``modes`` rows and columns of ``rfft2`` (non-negative
frequencies along x, as DPOT does), applies a block-diagonal complex two-layer MLP
with GELU and biases, and adds its own input back.
"""

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
    """DPOT normalises with 8 groups; widths that 8 does not divide fall back to one group."""
    return ContiguousGroupNorm(8 if width % 8 == 0 else 1, width)


class AFNOFilter(nn.Module):
    """x + irfft2(MLP_complex(rfft2(x)[:modes, :modes])) on [B, D, H, W] maps."""

    def __init__(self, width: int, blocks: int, modes: int) -> None:
        super().__init__()
        if width % blocks:
            raise ValueError(f"AFNO width {width} is not divisible by afno_blocks {blocks}")
        self.blocks, self.modes = blocks, modes
        bs = width // blocks
        scale = 1.0 / (bs * bs)  # DPOT's initialisation: uniform [0, scale)
        self.w1 = nn.Parameter(scale * torch.rand(2, blocks, bs, bs))
        self.b1 = nn.Parameter(scale * torch.rand(2, blocks, bs))
        self.w2 = nn.Parameter(scale * torch.rand(2, blocks, bs, bs))
        self.b2 = nn.Parameter(scale * torch.rand(2, blocks, bs))

    @staticmethod
    def _layer(z: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """z (w0 + i w1) + (b0 + i b1), block-diagonal over channels: DPOT's four real einsums as one complex one."""
        return torch.einsum("...bi,bio->...bo", z, torch.complex(*w.unbind(0))) + torch.complex(*b.unbind(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()  # FFTs in fp32 whatever the training precision
        b, d, h, w = x.shape
        spec = torch.fft.rfft2(x.permute(0, 2, 3, 1), dim=(1, 2), norm="ortho")  # [B, H, W//2+1, D]
        kept = spec[:, : self.modes, : self.modes]
        kept = kept.reshape(*kept.shape[:3], self.blocks, d // self.blocks)
        z = self._layer(kept, self.w1.float(), self.b1.float())
        z = torch.view_as_complex(F.gelu(torch.view_as_real(z)))  # GELU on the real and imaginary parts, as DPOT
        z = self._layer(z, self.w2.float(), self.b2.float())
        # irfft2 zero-pads the kept modes back to the full spectrum: the dropped modes are zero, as DPOT's
        y = torch.fft.irfft2(z.flatten(-2), s=(h, w), dim=(1, 2), norm="ortho").permute(0, 3, 1, 2)
        return (y + x).to(dtype)


class AFNOBlock(nn.Module):
    """DPOT's ``Block``: GroupNorm, filter, GroupNorm, 1x1-conv MLP, with one skip or two.

    ``double_skip=False`` is DPOT's and MoE-POT's form (one skip around the whole block);
    ``double_skip=True`` is the reference NESTOR ``AFNOExpert`` of the shared path.
    """

    def __init__(self, width: int, blocks: int, modes: int, hidden: int, double_skip: bool) -> None:
        super().__init__()
        self.double_skip = double_skip
        self.norm1 = group_norm(width)
        self.filter = AFNOFilter(width, blocks, modes)
        self.norm2 = group_norm(width)
        self.mlp = nn.Sequential(nn.Conv2d(width, hidden, 1), nn.GELU(), nn.Conv2d(hidden, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.filter(self.norm1(x))
        if self.double_skip:
            x = x + residual
            residual = x
        return self.mlp(self.norm2(x)) + residual
