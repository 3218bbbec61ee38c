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

from nestor_ds.model.collectives import sum_together
from nestor_ds.model.expert_parallel import SampleMoE
from nestor_ds.model.output import ModelOutput


def _value_with_grad_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    return value.detach() + (surrogate - surrogate.detach())


def _group(layers: list[SampleMoE]) -> dist.ProcessGroup | None:
    group = layers[0].deepspeed_moe.ep_group
    return group if group is not None and dist.get_world_size(group) > 1 else None


def reduce_moe_stats(
    layers: list[SampleMoE], pred: torch.Tensor, load_balancing: bool, balance: str = "switch"
) -> ModelOutput:
    """Aux losses per layer and the load statistics of one forward, over the expert-parallel group.

    ``balance``: ``switch`` (NESTOR: E * sum_i f_i p_i) or ``moepot`` (MoE-POT: mean_i (I_i - sum(I)/E)^2
    with I_i the routing weight expert i received).
    """
    zero = pred.new_zeros((), dtype=torch.float32)
    if not layers:
        return ModelOutput(pred, zero, zero)
    group = _group(layers)
    last = [s for layer in layers if (s := layer.deepspeed_moe.last) is not None]
    if len(last) != len(layers):
        raise RuntimeError("reduce_moe_stats runs after a forward of every MoE layer")
    top_k = layers[0].deepspeed_moe.gate.top_k
    e, e_local = layers[0].num_experts, layers[0].num_local_experts

    prob_sum = torch.stack([s.prob_sum for s in last])  # [L, E]
    if balance == "moepot":  # the routing weight each expert received
        experts = torch.stack([s.experts.reshape(-1) for s in last])  # [L, k * B]
        weights = torch.stack([s.weights.reshape(-1) for s in last])
        importance = prob_sum.new_zeros(prob_sum.shape).scatter_add_(1, experts, weights)  # [L, E]
    else:
        importance = prob_sum.new_zeros(prob_sum.shape[0], 0)
    token_aux = torch.stack([s.token_aux.float() for s in last])  # [L] local experts only
    counts = torch.stack([s.counts for s in last]).float()  # [L, E]
    dropped = torch.stack([s.dropped for s in last]).float()  # [L]
    batch = last[0].batch.reshape(1)
    sub = torch.stack([s.sub_counts for s in last]).float()  # [L, E_local, E']
    sub_global = sub.new_zeros(sub.shape[0], e, sub.shape[2])
    rank = dist.get_rank(group) if group is not None else 0
    sub_global[:, rank * e_local : (rank + 1) * e_local] = sub

    local_prob_sum, local_importance, local_token_aux, size = prob_sum, importance, token_aux, 1
    if group is not None:
        size = dist.get_world_size(group)
        prob_sum, importance, token_aux, counts, dropped, batch, sub_global = sum_together(
            [prob_sum.detach(), importance.detach(), token_aux.detach(), counts, dropped, batch, sub_global], group
        )  # one collective, forward only

    b = batch.squeeze()
    if balance == "moepot":
        # d/dI_i of mean_i (I_i - ideal)^2 is 2 (I_i - ideal) / E with ideal = sum(I) / E: a linear surrogate in
        # the local I_i carries the gradient of the group loss
        dev = importance - importance.sum(dim=-1, keepdim=True) / e
        value = dev.square().mean(dim=-1)
        grad_coef = (2.0 / e) * (dev - dev.mean(dim=-1, keepdim=True))
        aux_image_layers = _value_with_grad_of(value, size * (grad_coef.detach() * local_importance).sum(dim=-1))
    else:
        f = counts / (top_k * b)
        # Value: the loss over the whole group's batch. Gradient: what a differentiable all-reduce would give
        # (every rank's loss holds the group value, so each local term counts ``size`` times), with no
        # collective in the backward pass, whose order could differ between ranks.
        aux_image_layers = _value_with_grad_of(
            e * (f * prob_sum / b).sum(dim=-1), size * e * (f * local_prob_sum / b).sum(dim=-1)
        )
    aux_token_layers = _value_with_grad_of(token_aux, size * local_token_aux)  # sum over active experts
    if not load_balancing:
        aux_image_layers, aux_token_layers = aux_image_layers.detach() * 0, aux_token_layers.detach() * 0
    return ModelOutput(
        pred,
        aux_image_layers.mean(),
        (aux_token_layers / e).mean(),
        counts.long(),
        sub_global.long(),
        dropped.long(),
        aux_image_layers=aux_image_layers,
        aux_token_layers=aux_token_layers,
    )
