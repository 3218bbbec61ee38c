"""Rows grouped by expert, and the per-expert layers that run on them in one call.

A rank's local experts receive sample rows sorted by expert. Instead of a Python loop that cuts the
buffer per expert (which needs each expert's row count on the host: a device sync), every layer
runs once over the whole buffer: linear layers as one grouped GEMM with device-side group offsets
(``torch.nn.functional.grouped_mm``), LayerNorm affine parameters gathered per row. The experts'
own modules keep their parameters (DeepSpeed's checkpoints name experts one by one); their weights
are stacked for the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


@dataclass
class RowGroups:
    """``n`` rows sorted by expert; padding rows (not real samples) at the end, in the last group."""

    offs: torch.Tensor  # int32 [G]: cumulative row ends, offs[-1] == n
    expert: torch.Tensor  # long [n]: the group each row is computed in
    valid: torch.Tensor  # bool [n]: real rows (padding rows are left out of statistics)

    @property
    def groups(self) -> int:
        """Number of groups."""
        return self.offs.shape[0]


def row_groups(expert: torch.Tensor, groups: int) -> RowGroups:
    """Group rows whose (sorted) expert ids are ``expert``, id ``groups`` marking padding."""
    counts = torch.zeros(groups + 1, dtype=torch.long, device=expert.device).scatter_add_(
        0, expert, torch.ones_like(expert)
    )
    counts = torch.cat([counts[: groups - 1], counts[groups - 1 :].sum(0, keepdim=True)])  # padding into the last
    return RowGroups(counts.cumsum(0).to(torch.int32), expert.clamp(max=groups - 1), expert < groups)


def one_group(rows: int, device: torch.device, valid: torch.Tensor | None = None) -> RowGroups:
    """All ``rows`` in one group (a dense expert, or the reference path)."""
    valid = torch.ones(rows, dtype=torch.bool, device=device) if valid is None else valid
    return RowGroups(
        torch.full((1,), rows, dtype=torch.int32, device=device),
        torch.zeros(rows, dtype=torch.long, device=device),
        valid,
    )


def stacked(modules: Sequence[ModuleT], get: Callable[[ModuleT], torch.Tensor]) -> torch.Tensor:
    """One parameter of every expert, stacked on a new leading dim (gradients flow back to each)."""
    params = [get(m) for m in modules]
    return params[0].unsqueeze(0) if len(params) == 1 else torch.stack(params)


def grouped_mm_applies(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether ``F.grouped_mm`` runs here: CPU (fp32/bf16) or a Hopper-class GPU in bf16, rows 16-byte aligned."""
    if not hasattr(F, "grouped_mm"):
        return False
    if x.is_cuda:
        if x.dtype != torch.bfloat16 or torch.cuda.get_device_capability(x.device)[0] < 9:
            return False
    elif x.dtype not in (torch.float32, torch.bfloat16):
        return False
    per_16_bytes = 16 // x.element_size()
    return all(d % per_16_bytes == 0 for d in w.shape[1:])


def group_mm(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """x [rows, i] sorted into groups ending at ``offs`` (which must reach ``rows``), w [G, i, o] -> [rows, o].

    Grouped GEMM where it applies; elsewhere every group's matmul on all rows, masked to its own (no
    host read; G times the FLOPs, the price of fp32/fp16 on a GPU or a pre-Hopper one).
    """
    w = w.to(x.dtype)
    if grouped_mm_applies(x, w):
        if x.dtype != torch.bfloat16 and torch.compiler.is_compiling():
            return _eager_grouped_mm(x, w, offs)
        return F.grouped_mm(x, w, offs=offs)
    group_of = torch.bucketize(torch.arange(x.shape[0], device=x.device), offs.long(), right=True)
    out = x.new_zeros(x.shape[0], w.shape[-1])
    for g in range(w.shape[0]):
        out = out + (x @ w[g]) * (group_of == g).unsqueeze(-1).to(x.dtype)
    return out


@torch.compiler.disable
def _eager_grouped_mm(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """Outside ``torch.compile``'s graph: its grouped-GEMM shape function takes bf16 only, the CPU kernel fp32 too."""
    return F.grouped_mm(x, w, offs=offs)


def token_offsets(g: RowGroups, tokens_per_row: int) -> torch.Tensor:
    """Group ends counted in tokens, for grouped GEMMs over ``[rows * tokens, D]``."""
    return g.offs * tokens_per_row


def grouped_linear(x: torch.Tensor, g: RowGroups, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Each row through its expert's ``nn.Linear``: x [n, T, i], weight [G, o, i] (Linear layout), bias [G, o]."""
    n, t = x.shape[:2]
    y = group_mm(x.reshape(n * t, -1), weight.transpose(1, 2), token_offsets(g, t)).view(n, t, -1)
    return y if bias is None else y + bias.to(y.dtype).index_select(0, g.expert).unsqueeze(1)


def grouped_layer_norm(
    x: torch.Tensor, g: RowGroups, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """Each row through its expert's LayerNorm (x [n, T, D], weight/bias [G, D])."""
    y = F.layer_norm(x, x.shape[-1:], eps=eps)
    w, b = (p.to(y.dtype).index_select(0, g.expert).unsqueeze(1) for p in (weight, bias))
    return torch.addcmul(b, y, w)
