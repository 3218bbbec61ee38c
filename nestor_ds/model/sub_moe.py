"""Token-level Sub-MoE: top-k' routing over SwiGLU experts plus always-on shared experts.

The routed experts' weights are stacked (``w_gate_up [E', D, 2H]``, ``w_down [E', H, D]``).
``run_sub_moes`` runs the Sub-MoEs of several parent experts at once: every token is routed by
its parent's router, and all routed experts of all parents run in one grouped GEMM over the
routes sorted by (parent, sub-expert), with device-side offsets. Nothing is read back to the
host: a training step never waits on the device here.
"""

from __future__ import annotations

import math
from typing import Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn

from nestor_ds.model.grouped import (
    RowGroups,
    group_mm,
    grouped_linear,
    one_group,
    stacked,
)


class SwiGLU(nn.Module):
    """A SwiGLU feed-forward layer (the Sub-MoE's experts, and the dense ablation)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(width, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


def grouped_swiglu(mlps: Sequence[SwiGLU], x: torch.Tensor, g: RowGroups) -> torch.Tensor:
    """Each row [n, T, D] through its group's SwiGLU."""
    gate, up = grouped_linear(x, g, stacked(mlps, lambda m: m.gate_up.weight), None).chunk(2, dim=-1)
    return grouped_linear(F.silu(gate) * up, g, stacked(mlps, lambda m: m.down.weight), None)


def switch_balance_loss(probs: torch.Tensor, counts: torch.Tensor, top_k: int) -> torch.Tensor:
    """E * sum_i f_i * p_i, with f_i the share of the top-k routes to expert i and p_i the mean router
    probability (the loop reference's formula; ``run_sub_moes`` computes it per parent, padding left out)."""
    n = probs.shape[0]
    return probs.shape[-1] * (counts.to(probs.dtype) / max(n * top_k, 1) * probs.sum(dim=0) / max(n, 1)).sum()


class SubMoE(nn.Module):
    """Token-level Mixture of SwiGLU experts with shared experts (the inner MoE of NESTOR)."""

    def __init__(self, width: int, hidden: int, experts: int, top_k: int, shared: int) -> None:
        super().__init__()
        if top_k > experts:
            raise ValueError(f"Sub-MoE top_k={top_k} is larger than experts={experts}")
        self.experts, self.top_k, self.hidden = experts, top_k, hidden
        self.router = nn.Linear(width, experts)  # with bias, as the reference gate
        # nn.Linear's default initialisation, per expert: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        self.w_gate_up = nn.Parameter(torch.empty(experts, width, 2 * hidden).uniform_(-1, 1) / math.sqrt(width))
        self.w_down = nn.Parameter(torch.empty(experts, hidden, width).uniform_(-1, 1) / math.sqrt(hidden))
        self.shared = nn.ModuleList(SwiGLU(width, hidden) for _ in range(shared))

    def route(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(router probs [n, E'] fp32, chosen experts [n, k'], weights [n, k'] renormalised over the k')."""
        return _top_k(self.router(tokens), self.top_k, tokens.dtype)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [n, ..., D]; ``valid`` [n]: rows that are real samples, not buffer padding."""
        rows = x.reshape(x.shape[0], -1, x.shape[-1])
        out, aux, counts = run_sub_moes([self], rows, one_group(x.shape[0], x.device, valid))
        return out.view(x.shape), aux[0], counts[0]


def _top_k(logits: torch.Tensor, k: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    probs = torch.softmax(logits.float(), dim=-1)
    top_p, top_i = probs.topk(k, dim=-1)
    return probs, top_i, (top_p / top_p.sum(dim=-1, keepdim=True)).to(dtype)


def run_sub_moes(
    moes: Sequence[SubMoE], h: torch.Tensor, g: RowGroups
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows h [n, T, D] grouped by parent (``g``), each through its parent's Sub-MoE.

    Returns (out [n, T, D], aux [P] Switch loss per parent over its real tokens, counts [P, E'] routes of
    real tokens). A parent with no real token gives aux 0.
    """
    first, parents = moes[0], len(moes)
    e, k = first.experts, first.top_k
    n, t, d = h.shape
    tokens = h.reshape(n * t, d)

    # every parent's router (E' logits each, cheap) on every token; each token keeps its parent's
    w_router = stacked(moes, lambda m: m.router.weight).reshape(parents * e, d)
    b_router = stacked(moes, lambda m: m.router.bias).reshape(parents * e)
    logits = F.linear(tokens, w_router, b_router).view(n, t, parents, e)
    logits = logits.gather(2, g.expert.view(n, 1, 1, 1).expand(n, t, 1, e)).view(n * t, e)
    probs, top_i, weights = _top_k(logits, k, h.dtype)

    # routed experts of all parents: one grouped GEMM over routes sorted by (parent, sub-expert)
    expert = (g.expert.view(n, 1, 1) * e + top_i.view(n, t, k)).reshape(-1)
    routes = torch.zeros(parents * e, dtype=torch.long, device=h.device).scatter_add_(
        0, expert, torch.ones_like(expert)
    )
    order = torch.argsort(expert, stable=True)
    token_of = order // k
    offs = routes.cumsum(0).to(torch.int32)  # covers every route
    w_gate_up = first.w_gate_up if parents == 1 else torch.cat([m.w_gate_up for m in moes])
    w_down = first.w_down if parents == 1 else torch.cat([m.w_down for m in moes])
    gate, up = group_mm(tokens.index_select(0, token_of), w_gate_up, offs).chunk(2, dim=-1)
    y = group_mm(F.silu(gate) * up, w_down, offs)
    out = (
        torch.zeros_like(tokens).index_add(0, token_of, y * weights.reshape(-1, 1).index_select(0, order)).view(n, t, d)
    )
    for s in range(len(first.shared)):
        out = out + grouped_swiglu([cast(SwiGLU, m.shared[s]) for m in moes], h, g)

    # Switch balance loss per parent over its real tokens: one sum per parent of [probs | routes | 1] over real
    # tokens (no bincount, which sizes its output from the data: a host sync on CUDA)
    routed = torch.zeros_like(probs).scatter_(1, top_i, 1.0)
    per_row = torch.cat([probs, routed, torch.ones_like(probs[:, :1])], dim=1).view(n, t, 2 * e + 1).sum(dim=1)
    per_row = per_row * g.valid.unsqueeze(1)  # padding rows left out
    sums = torch.zeros(parents, 2 * e + 1, dtype=probs.dtype, device=h.device).index_add(0, g.expert, per_row)
    p_sum, counts, n_real = sums[:, :e], sums[:, e : 2 * e].detach(), sums[:, 2 * e :].detach()
    aux = e * (counts * p_sum).sum(dim=-1, keepdim=True) / ((n_real * k).clamp_min(1) * n_real.clamp_min(1))
    return out, aux.squeeze(1), counts.round().long()


def loop_sub_moe(moe: SubMoE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Python-loop Sub-MoE this project ran before (one gather and two matmuls per expert, sizes
    read back to the host): the benchmark's and the tests' unoptimised reference. (out, aux, counts)"""
    tokens = x.reshape(-1, x.shape[-1])
    probs, top_i, weights = moe.route(tokens)
    out = torch.zeros_like(tokens)
    for e in range(moe.experts):
        token_idx, slot = (top_i == e).nonzero(as_tuple=True)
        if token_idx.numel():
            gate, up = (tokens[token_idx] @ moe.w_gate_up[e]).chunk(2, dim=-1)
            y = (F.silu(gate) * up) @ moe.w_down[e]
            out = out.index_add(0, token_idx, y * weights[token_idx, slot, None])
    for shared in moe.shared:
        out = out + shared(tokens)
    counts = torch.bincount(top_i.reshape(-1), minlength=moe.experts)
    return out.reshape(x.shape), switch_balance_loss(probs, counts, moe.top_k), counts
