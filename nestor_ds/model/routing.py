"""Sample-level top-k routing, and MoE-POT's gating network."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Routes:
    """The routes of one batch: chosen experts, combine weights, positions and what capacity dropped."""

    probs: torch.Tensor  # [B, E] router probabilities (fp32, differentiable)
    experts: torch.Tensor  # [k, B] chosen expert per route, route 0 = best
    weights: torch.Tensor  # [k, B] renormalised over the k choices (sum to 1 per sample)
    position: torch.Tensor  # [k, B] the route's place in its expert's queue (first choices first)
    kept: torch.Tensor | None  # [k, B] bool: within capacity; None when dropless (all kept)
    capacity: int | None  # slots per expert when dropping, None when dropless
    counts: torch.Tensor  # [E] routes assigned per expert, before capacity
    dropped: torch.Tensor  # scalar: routes dropped by capacity


class SampleGate(nn.Module):
    """Score each pooled sample (``scorer``: [B, D] -> [B, E] logits), softmax with temperature, top-k.

    The k weights are renormalised over the chosen experts, which equals MoE-POT's softmax over
    the top-k logits divided by the temperature, and NESTOR's renormalised top-k of the softmax.
    Nothing here reads the device: capacity, when dropping, is static (from the batch size).
    """

    temperature: torch.Tensor  # a buffer: the routing softmax's temperature (annealed)

    def __init__(self, scorer: nn.Module, experts: int, top_k: int, capacity_factor: float, drop: bool) -> None:
        super().__init__()
        if top_k > experts:
            raise ValueError(f"image-level top_k={top_k} is larger than experts={experts}")
        self.scorer = scorer
        self.experts, self.top_k = experts, top_k
        self.capacity_factor, self.drop = capacity_factor, drop
        self.register_buffer("temperature", torch.ones(()), persistent=False)

    def capacity(self, batch: int) -> int | None:
        """Slots per expert and source rank when dropping (training only), ceil(cf * k * B / E); every rank
        of the group trains on equal micro-batches, so all agree. None: dropless (evaluation never drops:
        a sample's prediction must not depend on what else is in its batch)."""
        if self.drop and self.training:
            return max(1, math.ceil(self.capacity_factor * self.top_k * batch / self.experts))
        return None

    def forward(self, pooled: torch.Tensor) -> Routes:
        logits = self.scorer(pooled).float() / self.temperature
        probs = torch.softmax(logits, dim=-1)
        top_p, top_i = probs.topk(self.top_k, dim=-1)  # [B, k]
        weights = (top_p / top_p.sum(dim=-1, keepdim=True)).t()
        experts = top_i.t().contiguous()  # [k, B]: all first choices get slots before any second choice
        # one_hot would check the ids' range on the host: a scatter does not
        onehot = torch.zeros(experts.numel(), self.experts, dtype=torch.long, device=experts.device).scatter_(
            1, experts.reshape(-1, 1), 1
        )
        counts = onehot.sum(dim=0)
        capacity = self.capacity(pooled.shape[0])
        position = ((onehot.cumsum(dim=0) - 1) * onehot).sum(dim=-1).view_as(experts)
        kept = position < capacity if capacity is not None else None
        dropped = (~kept).sum() if kept is not None else torch.zeros((), dtype=torch.long, device=experts.device)
        return Routes(probs, experts, weights, position, kept, capacity, counts.detach(), dropped)


class ChannelAttention(nn.Module):
    """MoE-POT's squeeze-excite on a pooled [B, C, 1, 1] map, where average and max pooling are both the identity."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1), nn.GELU(), nn.Conv2d(channels // reduction, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x) + self.fc(x))


class MoEPOTScorer(nn.Module):
    """MoE-POT's gating network on the pooled features: conv-BN-GELU, channel attention, conv-BN-GELU, conv to E.

    ``frozen`` (fine-tuning, as MoE-POT) keeps its BatchNorms on their running statistics in training mode.
    """

    def __init__(self, width: int, experts: int) -> None:
        super().__init__()
        self.frozen = False
        self.gate = nn.Sequential(
            nn.Conv2d(width, 2 * width, 1),
            nn.BatchNorm2d(2 * width),
            nn.GELU(),
            ChannelAttention(2 * width),
            nn.Conv2d(2 * width, width, 1),
            nn.BatchNorm2d(width),
            nn.GELU(),
            nn.Conv2d(width, experts, 1),
        )

    def train(self, mode: bool = True) -> "MoEPOTScorer":
        """Training mode, except for a frozen scorer, whose BatchNorm statistics stay fixed."""
        return super().train(mode and not self.frozen)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # [B, D] -> [B, E]
        if self.training and pooled.shape[0] < 2:
            raise ValueError(
                "MoE-POT's gating network normalises over the batch (BatchNorm, as in MoE-POT): "
                f"training needs at least 2 samples per rank, got {pooled.shape[0]}; "
                "raise train.micro_batch_per_rank"
            )
        return self.gate(pooled[:, :, None, None]).flatten(1)
