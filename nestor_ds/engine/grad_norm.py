"""The true global gradient norm under expert parallelism.

Dense gradients are identical on every rank after reduction; expert gradients
differ between the ranks of an expert-parallel group and must be summed over it.
DeepSpeed's fp32 ZeRO-0 clipping averages per-rank norms instead, which is wrong
with expert shards, so ZeRO-0 runs clip here (see engine: ds gradient_clipping=0).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from deepspeed.moe.utils import is_moe_param
from deepspeed.utils import groups


def global_grad_norm(model: torch.nn.Module) -> torch.Tensor:
    """The gradient norm over all parameters and ranks (expert shards counted once), on the device."""
    device = next(model.parameters()).device
    dense = torch.zeros((), dtype=torch.float64, device=device)
    expert = torch.zeros((), dtype=torch.float64, device=device)
    group_name = None
    for p in model.parameters():
        moe = is_moe_param(p)
        group_name = getattr(p, "group_name") if moe else group_name  # known even where an expert got no gradient
        if p.grad is None:
            continue
        sq = p.grad.detach().double().square().sum()
        if moe:
            expert += sq
        else:
            dense += sq
    if group_name is not None and dist.is_initialized():
        ep_group = groups._get_expert_parallel_group(group_name)
        if dist.get_world_size(ep_group) > 1:
            dist.all_reduce(expert, group=ep_group)
    return (dense + expert).sqrt().float()


def clip_global_grad_norm_(model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """Scale gradients so their global norm is at most ``max_norm``; returns the norm before."""
    norm = global_grad_norm(model)
    if max_norm > 0:
        # scales by min(1, max_norm / (norm + 1e-6)) on the device: the step never waits for the norm
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), max_norm, norm)
    return norm
