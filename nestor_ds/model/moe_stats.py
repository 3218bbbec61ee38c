"""Load-balancing losses and expert-load statistics, reduced over the expert-parallel group.

Each rank routes only its own samples, so the Switch statistics f_i and p_i are
summed over the group once per forward (one all-reduce, forward only). The
losses then equal those of one process holding the whole group's batch, and
their gradients equal those of a differentiable all-reduce, which makes
ep_size=1 and ep_size=2 runs agree exactly.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from nestor_ds.model.expert_parallel import SampleMoE
from nestor_ds.model.output import ModelOutput


def _value_with_grad_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    return value.detach() + (surrogate - surrogate.detach())


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

    local_prob_sum, local_token_aux, size = prob_sum, token_aux, 1
    if group is not None:
        size = dist.get_world_size(group)
        n_p, n_c, n_l = prob_sum.numel(), counts.numel(), dropped.numel()
        flat = torch.cat([prob_sum.detach().reshape(-1), token_aux.detach(), counts.reshape(-1), dropped, batch,
                          sub_global.reshape(-1)])
        dist.all_reduce(flat, group=group)  # one collective, forward only
        prob_sum, token_aux = flat[:n_p].view_as(prob_sum), flat[n_p:n_p + token_aux.numel()]
        off = n_p + token_aux.numel()
        counts = flat[off:off + n_c].view_as(counts)
        dropped = flat[off + n_c:off + n_c + n_l]
        batch = flat[off + n_c + n_l:off + n_c + n_l + 1]
        sub_global = flat[off + n_c + n_l + 1:].view_as(sub_global)

    b = batch.squeeze()
    f = counts / (top_k * b)

    def image_loss(p_sum: torch.Tensor) -> torch.Tensor:
        return (e * (f * p_sum / b).sum(dim=-1)).mean()

    # Value: the loss over the whole group's batch. Gradient: what a differentiable all-reduce would
    # give (every rank's loss holds the group value, so each local term counts ``size`` times), but
    # with no collective in the backward pass, whose order could differ between ranks.
    aux_image = _value_with_grad_of(image_loss(prob_sum), size * image_loss(local_prob_sum))
    aux_token = _value_with_grad_of((token_aux / e).mean(), size * (local_token_aux / e).mean())
    if not load_balancing:
        aux_image, aux_token = aux_image.detach() * 0, aux_token.detach() * 0
    return ModelOutput(pred, aux_image, aux_token, counts.long(), sub_global.long(), dropped.long())
