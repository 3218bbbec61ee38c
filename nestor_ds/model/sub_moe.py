"""Token-level Sub-MoE: top-k' routing over SwiGLU experts plus always-on shared experts.

The routed experts' weights are stacked (``w_gate_up [E', D, 2H]``, ``w_down [E', H, D]``) so
that all of them run in one grouped GEMM over the tokens sorted by expert
(``torch.nn.functional.grouped_mm`` with device-side offsets), or, where grouped GEMM does not
apply, in one batched matmul over all experts with the unchosen ones weighted zero. Neither
path reads a size back to the host: a training step never waits on the device here.
"""
from __future__ import annotations

import math

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


def switch_balance_loss(probs: torch.Tensor, counts: torch.Tensor, top_k: int,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """E * sum_i f_i * p_i over the real tokens (``mask``), with f_i the share of their top-k routes to
    expert i and p_i their mean router probability; 0 when no token is real."""
    e = probs.shape[-1]
    if mask is None:
        n = torch.tensor(float(probs.shape[0]), device=probs.device)
        p_sum = probs.sum(dim=0)
    else:
        n = mask.to(probs.dtype).sum()
        p_sum = (probs * mask[:, None]).sum(dim=0)
    f = counts.to(probs.dtype) / (n * top_k).clamp_min(1)
    return e * (f * p_sum / n.clamp_min(1)).sum()


def grouped_mm_applies(x: torch.Tensor, *weights: torch.Tensor) -> bool:
    """Whether ``F.grouped_mm`` runs here: CPU (fp32/bf16) or a Hopper-class GPU in bf16, rows 16-byte aligned."""
    if not hasattr(F, "grouped_mm"):
        return False
    if x.is_cuda:
        if x.dtype != torch.bfloat16 or torch.cuda.get_device_capability(x.device)[0] < 9:
            return False
    elif x.dtype not in (torch.float32, torch.bfloat16):
        return False
    per_16_bytes = 16 // x.element_size()
    return all(d % per_16_bytes == 0 for w in weights for d in w.shape[1:])


class SubMoE(nn.Module):
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
        probs = torch.softmax(self.router(tokens).float(), dim=-1)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        return probs, top_i, (top_p / top_p.sum(dim=-1, keepdim=True)).to(tokens.dtype)

    def _grouped(self, tokens: torch.Tensor, top_i: torch.Tensor, weights: torch.Tensor,
                 routes: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(top_i.reshape(-1), stable=True)  # routes grouped by expert
        token_of = order // self.top_k
        offs = routes.cumsum(0).to(torch.int32)  # must cover every row: rows past the end stay unwritten
        gate, up = F.grouped_mm(tokens[token_of], self.w_gate_up.to(tokens.dtype), offs=offs).chunk(2, dim=-1)
        y = F.grouped_mm(F.silu(gate) * up, self.w_down.to(tokens.dtype), offs=offs)
        return torch.zeros_like(tokens).index_add(0, token_of, y * weights.reshape(-1)[order, None])

    def _dense(self, tokens: torch.Tensor, top_i: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        gate, up = torch.einsum("nd,edh->enh", tokens, self.w_gate_up.to(tokens.dtype)).chunk(2, dim=-1)
        y = torch.einsum("enh,ehd->end", F.silu(gate) * up, self.w_down.to(tokens.dtype))
        dense_w = torch.zeros(tokens.shape[0], self.experts, dtype=tokens.dtype, device=tokens.device)
        return torch.einsum("end,ne->nd", y, dense_w.scatter(1, top_i, weights))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
        """x [n, N, D] (or any [..., D]); ``valid`` [n]: rows that are real samples, not buffer padding."""
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        probs, top_i, weights = self.route(tokens)
        mask = None if valid is None else valid[:, None].expand(shape[:-1]).reshape(-1)
        # scatter_add, not bincount: bincount sizes its output from the data, a host sync on CUDA
        routes = torch.zeros(self.experts, dtype=torch.long, device=x.device).scatter_add_(
            0, top_i.reshape(-1), torch.ones_like(top_i.reshape(-1)))  # all rows: the GEMM groups
        counts = routes if mask is None else torch.zeros_like(routes).scatter_add_(  # real rows: statistics
            0, top_i.reshape(-1), mask[:, None].expand_as(top_i).reshape(-1).long())
        if grouped_mm_applies(tokens, self.w_gate_up, self.w_down):
            out = self._grouped(tokens, top_i, weights, routes)
        else:
            out = self._dense(tokens, top_i, weights)
        for shared in self.shared:
            out = out + shared(tokens)
        aux = switch_balance_loss(probs, counts, self.top_k, mask)
        return out.reshape(shape), aux, counts.detach()


def loop_sub_moe(moe: SubMoE, x: torch.Tensor) -> torch.Tensor:
    """The Python-loop Sub-MoE this project ran before (one gather and two matmuls per expert, sizes
    read back to the host): the benchmark's and the tests' unoptimised reference."""
    tokens = x.reshape(-1, x.shape[-1])
    _, top_i, weights = moe.route(tokens)
    out = torch.zeros_like(tokens)
    for e in range(moe.experts):
        token_idx, slot = (top_i == e).nonzero(as_tuple=True)
        if token_idx.numel():
            gate, up = (tokens[token_idx] @ moe.w_gate_up[e]).chunk(2, dim=-1)
            y = (F.silu(gate) * up) @ moe.w_down[e]
            out = out.index_add(0, token_idx, y * weights[token_idx, slot, None])
    for shared in moe.shared:
        out = out + shared(tokens)
    return out.reshape(x.shape)
