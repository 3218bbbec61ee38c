"""DPOT's adaptive Fourier block: the spectral filter and the AFNO block around it, 2-D or 3-D.

Computes what thu-ml/DPOT ``models/dpot.py`` (``AFNO2D``, ``Block``) and ``models/dpot3d.py``
(``AFNO3D``) compute: the filter keeps the first ``modes`` entries of each axis of ``rfftn``
(non-negative frequencies only, as DPOT does; DPOT-3D keeps ``modes`` along x and y and
``temporal_modes``, default 8, along the third axis), applies a block-diagonal complex
two-layer MLP with GELU and biases, and adds its own input back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nestor_ds.model.encoder import conv


class ContiguousGroupNorm(nn.GroupNorm):
    """GroupNorm on a contiguous input: torch 2.13's CPU backward segfaults on a permuted input that
    needs no gradient (what a frozen encoder hands the first block)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.contiguous())


def group_norm(width: int) -> nn.GroupNorm:
    """DPOT normalises with 8 groups; widths that 8 does not divide fall back to one group."""
    return ContiguousGroupNorm(8 if width % 8 == 0 else 1, width)


class AFNOFilter(nn.Module):
    """x + irfftn(MLP_complex(rfftn(x)[:m1, :m2(, :m3)])) on [B, D, *space] maps.

    ``modes``: one count for every axis, or one per axis (DPOT-3D: ``(modes, modes, 8)``).
    """

    def __init__(self, width: int, blocks: int, modes: int | tuple[int, ...]) -> None:
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
        d, space = x.shape[1], tuple(x.shape[2:])
        axes = tuple(range(1, len(space) + 1))
        modes = self.modes if isinstance(self.modes, tuple) else (self.modes,) * len(space)
        spec = torch.fft.rfftn(x.movedim(1, -1), dim=axes, norm="ortho")  # [B, *space (last n//2+1), D]
        kept = spec[(slice(None), *(slice(0, m) for m in modes))]
        kept = kept.unflatten(-1, (self.blocks, d // self.blocks))
        z = self._layer(kept, self.w1.float(), self.b1.float())
        z = torch.view_as_complex(F.gelu(torch.view_as_real(z)))  # GELU on the real and imaginary parts, as DPOT
        z = self._layer(z, self.w2.float(), self.b2.float())
        # irfftn zero-pads the kept modes back to the full spectrum: the dropped modes are zero, as DPOT's
        y = torch.fft.irfftn(z.flatten(-2), s=space, dim=axes, norm="ortho").movedim(-1, 1)
        return (y + x).to(dtype)


class AFNOBlock(nn.Module):
    """DPOT's ``Block``: GroupNorm, filter, GroupNorm, 1x1-conv MLP, with one skip or two.

    ``double_skip=False`` is DPOT's and MoE-POT's form (one skip around the whole block);
    ``double_skip=True`` is the reference NESTOR ``AFNOExpert`` of the shared path.
    """

    def __init__(
        self, width: int, blocks: int, modes: int | tuple[int, ...], hidden: int, double_skip: bool, dims: int = 2
    ) -> None:
        super().__init__()
        self.double_skip = double_skip
        self.norm1 = group_norm(width)
        self.filter = AFNOFilter(width, blocks, modes)
        self.norm2 = group_norm(width)
        self.mlp = nn.Sequential(conv(dims)(width, hidden, 1), nn.GELU(), conv(dims)(hidden, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.filter(self.norm1(x))
        if self.double_skip:
            x = x + residual
            residual = x
        return self.mlp(self.norm2(x)) + residual
