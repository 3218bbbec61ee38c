"""A scale model of one training step on N GPUs: compute, expert all-to-all, ZeRO gradient traffic, model states.

Inputs are counted, not guessed, where they can be: forward+backward FLOPs per sample from
``torch.utils.flop_counter`` on the real model, dense and expert parameter counts from the real model, and the
all-to-all bytes from the model's shapes and the routes (balanced routing by default, or a step's route counts).
The rest are flags: MFU, peak TFLOP/s, link bandwidths (H100 SXM defaults: NVLink 450 GB/s per direction,
400 Gb/s InfiniBand per GPU). The step time is an upper bound: compute + all-to-all + gradient traffic, none of it
hidden behind another (NESTOR's forward dispatch overlaps its AFNO path; DeepSpeed overlaps gradient reduction
with the backward when ``overlap_comm`` is on).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nestor_ds.config.schema import ModelConfig
from nestor_ds.model.blocks import hidden_width
from nestor_ds.model.registry import build_model
from nestor_ds.profiling import count_flops

COUNT_BYTES = 8  # the per-expert route counts exchanged before each dropless dispatch (int64)


@dataclass(frozen=True)
class ModelFacts:
    """What the scale model needs of a model, counted on the real one."""

    name: str
    flops_per_sample: float  # forward + backward
    dense_params: int
    expert_params: int  # all experts of all layers
    moe_layers: int
    experts: int
    top_k: int
    tokens: int
    in_width: int  # channels of a sample sent to an expert
    out_width: int  # channels of an expert's output sent back

    def route_bytes(self, element_bytes: int) -> int:
        """Bytes one route moves to its expert and back, forward and backward (gradients the same sizes)."""
        return 2 * self.tokens * (self.in_width + self.out_width) * element_bytes


def model_facts(cfg: ModelConfig, name: str, batch: int = 2) -> ModelFacts:
    """Count ``cfg``'s FLOPs per sample (fp32 on this CPU, ``batch`` samples) and its dense and expert parameters."""
    model = build_model(cfg, ep_size=1, seed=0)
    x = torch.randn(cfg.input_shape(batch))

    def step() -> None:
        out = model(x)
        (out.pred.square().mean() + out.aux_image + out.aux_token).backward()

    flops = count_flops(step) / batch
    expert = sum(p.numel() for p in model.parameters() if getattr(p, "allreduce", True) is False)
    dense = sum(p.numel() for p in model.parameters()) - expert
    moe = cfg.moe if cfg.is_moe else None
    return ModelFacts(
        name,
        float(flops),
        dense,
        expert,
        len(model.moe_layers),
        moe.experts if moe else 0,
        moe.top_k if moe else 0,
        cfg.tokens,
        hidden_width(cfg) if cfg.variant == "moepot" else cfg.width,
        cfg.width,
    )


def alltoall_bytes_of_routes(counts: list[list[list[int]]], facts: ModelFacts, element_bytes: int) -> int:
    """Bytes sent between ranks in one training step (forward + backward, summed over ranks; a rank's rows to its
    own experts are a local copy, not counted) given each layer's route counts ``counts[layer][rank][expert]``:
    every route to another rank's expert, there and back, plus the count exchange before each dropless dispatch."""
    total = 0
    for layer in counts:
        ep = len(layer)
        local = facts.experts // ep
        for src, per_expert in enumerate(layer):
            remote = sum(n for e, n in enumerate(per_expert) if e // local != src)
            total += remote * facts.route_bytes(element_bytes) + (ep - 1) * local * COUNT_BYTES
    return total


@dataclass(frozen=True)
class Cluster:
    """The machine: GPUs per node, links, the GPU's peak and the MFU reached."""

    gpus_per_node: int = 8
    nvlink_gbs: float = 450.0  # GB/s per direction per GPU (H100 SXM)
    ib_gbs: float = 50.0  # GB/s per GPU (400 Gb/s InfiniBand)
    peak_tflops: float = 989.0  # H100 dense bf16
    mfu: float = 0.3
    gpu_mem_gib: float = 80.0


@dataclass(frozen=True)
class StepPrediction:
    """One configuration's predicted step, per GPU."""

    gpus: int
    ep: int
    compute_s: float
    alltoall_s: float
    grad_s: float
    states_gib: float  # weights, gradients and Adam states on one GPU (activations not included)

    @property
    def step_s(self) -> float:
        """Upper bound: nothing hidden behind anything."""
        return self.compute_s + self.alltoall_s + self.grad_s


def _link(within_node: bool, cluster: Cluster) -> float:
    """Bytes per second one GPU moves in a collective: NVLink inside a node, InfiniBand across nodes."""
    return (cluster.nvlink_gbs if within_node else cluster.ib_gbs) * 1e9


def ep_within_node(ep: int, cluster: Cluster) -> bool:
    """DeepSpeed forms EP groups of consecutive ranks: one stays inside a node when ``ep`` divides its GPUs."""
    return ep <= cluster.gpus_per_node and cluster.gpus_per_node % ep == 0


def predict_step(
    facts: ModelFacts, gpus: int, ep: int, micro_batch: int, zero: int, cluster: Cluster, element_bytes: int = 2
) -> StepPrediction:
    """Step time and model states per GPU at ``gpus`` GPUs, ``ep``-way expert parallelism, balanced routing."""
    compute = facts.flops_per_sample * micro_batch / (cluster.mfu * cluster.peak_tflops * 1e12)
    remote_share = (ep - 1) / ep
    a2a_bytes = facts.moe_layers * (
        micro_batch * facts.top_k * remote_share * facts.route_bytes(element_bytes)
        + (ep - 1) * (facts.experts // max(ep, 1)) * COUNT_BYTES
    )
    alltoall = a2a_bytes / _link(ep_within_node(ep, cluster), cluster) if ep > 1 else 0.0
    # ZeRO 1/2: reduce-scatter the gradients, all-gather the updated weights: 2 (n-1)/n of the size each GPU holds.
    # Both data-parallel groups (all GPUs for dense weights; every ep-th GPU for an expert) leave the node once
    # there is more than one
    dense_dp, expert_dp = gpus, gpus // ep
    local_expert = facts.expert_params / ep
    grads_link = _link(gpus <= cluster.gpus_per_node, cluster)
    grad_s = 2 * (dense_dp - 1) / dense_dp * facts.dense_params * element_bytes / grads_link
    if expert_dp > 1:
        grad_s += 2 * (expert_dp - 1) / expert_dp * local_expert * element_bytes / grads_link
    # weights (bf16) whole; fp32 master + Adam (12 B) split over the data-parallel group; gradients split (ZeRO 2)
    states = 0.0
    for params, dp in ((facts.dense_params, dense_dp), (local_expert, expert_dp)):
        grads = element_bytes * params / (dp if zero >= 2 else 1)
        states += element_bytes * params + grads + 12 * params / dp
    return StepPrediction(gpus, ep, compute, alltoall, grad_s, states / 2**30)


def ep_choices(facts: ModelFacts, gpus: int) -> list[int]:
    """ep sizes that divide both the experts and the GPUs."""
    return [ep for ep in range(1, max(facts.experts, 1) + 1) if facts.experts % ep == 0 and gpus % ep == 0] or [1]


def best_ep(facts: ModelFacts, gpus: int, micro_batch: int, zero: int, cluster: Cluster) -> StepPrediction:
    """The fastest ep whose model states fit the GPU (else the one with the smallest states)."""
    options = [predict_step(facts, gpus, ep, micro_batch, zero, cluster) for ep in ep_choices(facts, gpus)]
    fits = [p for p in options if p.states_gib <= cluster.gpu_mem_gib]
    return min(fits, key=lambda p: p.step_s) if fits else min(options, key=lambda p: p.states_gib)


def scale_table(
    facts: ModelFacts, gpu_counts: list[int], micro_batch: int, zero: int, cluster: Cluster
) -> list[StepPrediction]:
    """Every (GPUs, ep) prediction, GPU counts in order, ep ascending."""
    return [predict_step(facts, n, ep, micro_batch, zero, cluster) for n in gpu_counts for ep in ep_choices(facts, n)]
