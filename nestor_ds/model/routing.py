"""Sample-level top-k routing with a capacity agreed across the expert-parallel group."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Routes:
    probs: torch.Tensor  # [B, E] router probabilities (fp32, differentiable)
    experts: torch.Tensor  # [k, B] chosen expert per route, route 0 = best
    weights: torch.Tensor  # [k, B] renormalised over the k choices (sum to 1 per sample)
    slots: torch.Tensor  # [k, B] flat slot e * C + position, or E * C where dropped
    capacity: int
    counts: torch.Tensor  # [E] routes assigned per expert, before capacity
    dropped: torch.Tensor  # scalar: routes dropped by capacity


class SampleGate(nn.Module):
    """Pool each sample to a vector, Linear(D -> E), softmax (with temperature), top-k."""

    def __init__(self, width: int, experts: int, top_k: int, capacity_factor: float, drop: bool) -> None:
        super().__init__()
        if top_k > experts:
            raise ValueError(f"image-level top_k={top_k} is larger than experts={experts}")
        self.wg = nn.Linear(width, experts, bias=False)
        self.experts, self.top_k = experts, top_k
        self.capacity_factor, self.drop = capacity_factor, drop
        self.register_buffer("temperature", torch.ones(()), persistent=False)

    def capacity(self, batch: int, counts: torch.Tensor, group: dist.ProcessGroup | None) -> int:
        # evaluation never drops: a sample's prediction must not depend on what else is in its batch
        if self.drop and self.training:
            cap = torch.tensor(max(1, math.ceil(self.capacity_factor * self.top_k * batch / self.experts)))
        else:
            cap = counts.max().cpu()
        if group is not None and dist.get_world_size(group) > 1:
            cap = cap.to(counts.device)
            dist.all_reduce(cap, op=dist.ReduceOp.MAX, group=group)  # equal all-to-all buffers on every rank
        return int(cap.item())

    def forward(self, pooled: torch.Tensor, group: dist.ProcessGroup | None) -> Routes:
        logits = self.wg(pooled).float() / self.temperature
        probs = torch.softmax(logits, dim=-1)
        top_p, top_i = probs.topk(self.top_k, dim=-1)  # [B, k]
        weights = (top_p / top_p.sum(dim=-1, keepdim=True)).t()
        experts = top_i.t()  # [k, B]: all first choices get slots before any second choice
        onehot = torch.nn.functional.one_hot(experts.reshape(-1), self.experts)
        counts = onehot.sum(dim=0)
        capacity = self.capacity(pooled.shape[0], counts, group)
        position = ((onehot.cumsum(dim=0) - 1) * onehot).sum(dim=-1).view_as(experts)
        kept = position < capacity
        slots = torch.where(kept, experts * capacity + position, torch.full_like(experts, self.experts * capacity))
        return Routes(probs, experts, weights, slots, capacity, counts.detach(), (~kept).sum().detach())
