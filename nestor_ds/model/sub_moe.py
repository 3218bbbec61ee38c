"""Token-level Sub-MoE: top-k' routing over SwiGLU experts plus always-on shared experts.

Each local sub-expert runs once over all tokens routed to it (gather by index,
scatter-add back), never one Python step per token or per sample.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(width, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


def switch_balance_loss(probs: torch.Tensor, counts: torch.Tensor, n_routes: int) -> torch.Tensor:
    """E * sum_i f_i * p_i, with f_i the share of top-k routes to expert i and p_i the mean router prob."""
    e = probs.shape[-1]
    f = counts.to(probs.dtype) / max(n_routes, 1)
    p = probs.mean(dim=0)
    return e * (f * p).sum()


class SubMoE(nn.Module):
    def __init__(self, width: int, hidden: int, experts: int, top_k: int, shared: int) -> None:
        super().__init__()
        if top_k > experts:
            raise ValueError(f"Sub-MoE top_k={top_k} is larger than experts={experts}")
        self.top_k = top_k
        self.router = nn.Linear(width, experts)  # with bias, as the reference gate
        self.sub_experts = nn.ModuleList(SwiGLU(width, hidden) for _ in range(experts))
        self.shared = nn.ModuleList(SwiGLU(width, hidden) for _ in range(shared))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        n, e = tokens.shape[0], len(self.sub_experts)
        probs = torch.softmax(self.router(tokens).float(), dim=-1)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        weights = (top_p / top_p.sum(dim=-1, keepdim=True)).to(x.dtype)

        flat_expert = top_i.reshape(-1)
        counts = torch.bincount(flat_expert, minlength=e)
        order = torch.argsort(flat_expert, stable=True)
        token_of = order // self.top_k
        weight_of = weights.reshape(-1)[order]
        out = torch.zeros_like(tokens)
        start = 0
        for expert, count in zip(self.sub_experts, counts.tolist()):
            if count:
                idx = token_of[start:start + count]
                out = out.index_add(0, idx, expert(tokens[idx]) * weight_of[start:start + count, None])
            start += count
        for shared in self.shared:
            out = out + shared(tokens)
        aux = switch_balance_loss(probs, counts, n * self.top_k)
        return out.reshape(shape), aux, counts.detach()
