"""Load-balancing losses and expert-load statistics, reduced over the expert-parallel group.

Each rank routes only its own samples, so the Switch statistics f_i and p_i are
summed over the group once per forward (one differentiable all-reduce for the
losses, one plain all-reduce for the counts). The losses then equal those of one
process holding the whole group's batch, which makes ep_size=1 and ep_size=2
runs agree exactly.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from nestor_ds.model.collectives import all_reduce_sum
from nestor_ds.model.expert_parallel import SampleMoE
from nestor_ds.model.output import ModelOutput


def _group(layers: list[SampleMoE]) -> dist.ProcessGroup | None:
    group = layers[0].deepspeed_moe.ep_group
    return group if group is not None and dist.get_world_size(group) > 1 else None


def reduce_moe_stats(layers: list[SampleMoE], pred: torch.Tensor, load_balancing: bool) -> ModelOutput:
    zero = pred.new_zeros((), dtype=torch.float32)
    if not layers:
        return ModelOutput(pred, zero, zero)
    group = _group(layers)
    last = [layer.deepspeed_moe.last for layer in layers]
    top_k = layers[0].deepspeed_moe.gate.top_k
    e, e_local = layers[0].num_experts, layers[0].num_local_experts

    prob_sum = torch.stack([s["prob_sum"] for s in last])  # [L, E]
    token_aux = torch.stack([s["token_aux"].float() for s in last])  # [L] local experts only
    counts = torch.stack([s["counts"] for s in last]).float()  # [L, E]
    dropped = torch.stack([s["dropped"] for s in last]).float()  # [L]
    batch = last[0]["batch"].reshape(1)
    sub = torch.stack([s["sub_counts"] for s in last]).float()  # [L, E_local, E']
    sub_global = sub.new_zeros(sub.shape[0], e, sub.shape[2])
    rank = dist.get_rank(group) if group is not None else 0
    sub_global[:, rank * e_local:(rank + 1) * e_local] = sub

    if group is not None:
        summed = all_reduce_sum(torch.cat([prob_sum.reshape(-1), token_aux]), group)  # one collective
        prob_sum, token_aux = summed[:prob_sum.numel()].view_as(prob_sum), summed[prob_sum.numel():]
        plain = torch.cat([counts.reshape(-1), dropped, batch, sub_global.reshape(-1)])
        dist.all_reduce(plain, group=group)
        n_c, n_l = counts.numel(), dropped.numel()
        counts = plain[:n_c].view_as(counts)
        dropped = plain[n_c:n_c + n_l]
        batch = plain[n_c + n_l:n_c + n_l + 1]
        sub_global = plain[n_c + n_l + 1:].view_as(sub_global)

    b = batch.squeeze()
    f = counts / (top_k * b)
    p = prob_sum / b
    aux_image = (e * (f * p).sum(dim=-1)).mean()
    aux_token = (token_aux / e).mean()
    if not load_balancing:
        aux_image, aux_token = aux_image.detach() * 0, aux_token.detach() * 0
    return ModelOutput(pred, aux_image, aux_token, counts.long(), sub_global.long(), dropped.long())
