"""Image-level MoE with true expert parallelism, built from DeepSpeed's MoE pieces.

DeepSpeed's stock ``MoE`` routes tokens; here whole samples are routed. The layer
subclasses ``deepspeed.moe.layer.MoE`` so that the engine finds it (process
groups, MoE optimizer groups, per-expert checkpoint files) and keeps the experts in
DeepSpeed's ``Experts`` container (``allreduce=False`` + group name). Samples move by
``model.exchange``: all-to-alls with variable splits, the first one issued before the
block's shared path runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from deepspeed.moe.experts import Experts
from deepspeed.moe.layer import MoE
from torch import nn

from nestor_ds.config.schema import ImageMoEConfig
from nestor_ds.model.exchange import Pending, Traffic, exchange, exchange_ints, start_exchange, wait_exchange
from nestor_ds.model.grouped import row_groups
from nestor_ds.model.routing import Routes, SampleGate


def expert_seed(base_seed: int, layer: int, global_expert: int) -> int:
    """Initial-weight seed of one expert: the same whatever ep_size the model is built with."""
    return (base_seed * 1_000_003 + layer * 10_007 + global_expert * 101 + 17) % (2**63 - 1)


@dataclass
class DispatchStats:
    """What one forward of a :class:`SampleDispatcher` routed, for the aux losses and the load statistics."""

    prob_sum: torch.Tensor  # [E] router probabilities summed over the local batch
    counts: torch.Tensor  # [E] routes each expert received from this rank
    experts: torch.Tensor  # [k, B] the expert of each route
    weights: torch.Tensor  # [k, B] the combine weight of each route
    batch: torch.Tensor  # () local batch size, as a float tensor (all-reduced with the rest)
    dropped: torch.Tensor  # () routes dropped by capacity
    token_aux: torch.Tensor  # () Sub-MoE balance loss summed over the local experts (0 for an expert with no row)
    sub_counts: torch.Tensor  # [E_local, E'] tokens each Sub-MoE expert of each local expert received
    rows_computed: int  # samples this rank's experts ran (real routes received, plus padding rows in drop mode)


@dataclass
class InFlight:
    """A dispatch between :meth:`SampleDispatcher.start` and :meth:`SampleDispatcher.finish`."""

    routes: Routes
    slots: torch.Tensor  # [k, B] the send-buffer row of each route (past the end: dropped)
    sample_shape: torch.Size  # [N, D] of one sample
    received: torch.Tensor  # [rows, N * D] samples for the local experts (being filled while ``pending``)
    local: torch.Tensor  # [rows] local expert of each received row (E_local: padding)
    pending: Pending | None  # the exchange (its rows per peer; in flight until waited for); None at ep_size 1


def default_ep_rank(ep_size: int) -> int:
    """EP rank DeepSpeed will assign: consecutive ranks form an expert-parallel group."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", 0))
    return rank % ep_size


class SampleDispatcher(nn.Module):
    """Route, exchange whole samples by all-to-all, run local experts, send back, combine.

    Dropless (the default): each rank sends every other rank exactly the routes for its experts, sorted by
    expert. The per-expert counts go first (one small integer all-to-all), and the host reads them once per
    layer to size the variable-split exchange: the experts run on the real routes and nothing else.
    Drop mode: static capacity, ``C`` slots per expert and source rank, equal splits; unused slots are padding
    rows that run through the experts (left out of their statistics) and nothing is read back to the host.
    At ep_size 1 neither mode exchanges anything nor reads the host.
    """

    def __init__(
        self,
        gate: SampleGate,
        experts: Experts,
        *,
        ep_size: int,
        num_local: int,
        out_width: int,
        expert_compute: str = "grouped",
    ) -> None:
        super().__init__()
        self.gate = gate
        self.out_width = out_width  # experts may change the token width (MoE-POT: hidden -> D)
        self.experts = experts
        self.ep_size, self.num_local = ep_size, num_local
        self.expert_compute = expert_compute
        self.ep_group: dist.ProcessGroup | None = None
        self.expected_ep_rank = 0
        self.last: DispatchStats | None = None  # the latest forward's routing
        self.traffic = Traffic()  # what this layer's exchanges moved (the benchmarks read and reset it)

    def _set_ep_group(self, group: dist.ProcessGroup) -> None:
        size, rank = dist.get_world_size(group), dist.get_rank(group)
        if size != self.ep_size or rank != self.expected_ep_rank:
            raise RuntimeError(
                f"expert-parallel group has size {size}, rank {rank}, but the experts were built for "
                f"ep_size={self.ep_size}, ep rank {self.expected_ep_rank}"
            )
        self.ep_group = group

    def _group(self) -> dist.ProcessGroup:
        if self.ep_group is None:
            raise RuntimeError(
                f"ep_size={self.ep_size} but no expert-parallel group is set: run through deepspeed.initialize "
                f"or call set_deepspeed_parallelism() after init_distributed"
            )
        return self.ep_group

    def _static_layout(self, routes: Routes) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Drop mode: (slot [k, B] of each route in the send buffer, or the trash slot past its end when dropped;
        local expert id [ep * Cd] of each slot, E_local for padding; Cd, rows per destination)."""
        e_local, experts = self.num_local, routes.experts
        if routes.capacity is None or routes.kept is None:
            raise RuntimeError("the static layout is drop mode's")
        dest_cap = e_local * routes.capacity
        kept = torch.zeros_like(routes.counts).scatter_add_(0, experts.reshape(-1), routes.kept.reshape(-1).long())
        kept = kept.view(self.ep_size, e_local)
        start = (kept.cumsum(dim=1) - kept).reshape(-1)  # where each expert's rows begin in its rank's buffer
        trash = self.ep_size * dest_cap
        slots = (experts // e_local) * dest_cap + start[experts] + routes.position
        slots = torch.where(routes.kept, slots, torch.full_like(experts, trash))
        local = torch.full((trash + 1,), e_local, dtype=torch.long, device=experts.device)
        local.scatter_(0, slots.reshape(-1), (experts % e_local).reshape(-1))
        return slots, local[:-1], dest_cap

    def _run_experts(self, rows: torch.Tensor, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows [n, N, D] with their local expert ids (E_local = padding) -> (outputs, aux [E_local], counts)."""
        experts = list(self.experts.deepspeed_experts)
        if rows.shape[0] == 0:  # no route reached this rank: one padding row keeps every expert in the step
            probe = rows.new_zeros(1, *rows.shape[1:])  # (zero gradients; left out of every statistic)
            pad = torch.full((1,), self.num_local, dtype=torch.long, device=rows.device)
            y, aux, counts = type(experts[0]).run_grouped(experts, probe, row_groups(pad, self.num_local))
            # tied to the (empty) received rows: the backward must still run this rank's share of the exchange
            return y[:0] + rows.sum() * 0, aux, counts
        if self.expert_compute == "loop":  # the unoptimised reference: one expert after another, sizes on the host
            out, aux, counts = rows.new_zeros(*rows.shape[:-1], self.out_width), [], []
            for j, expert in enumerate(experts):
                idx = (local == j).nonzero().squeeze(1)
                y, a, c = expert.reference(rows[idx])
                out = out.index_add(0, idx, y.to(out.dtype))
                aux.append(a)
                counts.append(c)
            return out, torch.stack(aux), torch.stack(counts)
        order = None
        if self.ep_size > 1:  # rows from different source ranks interleave: sort them by expert
            order = torch.argsort(local, stable=True)
            rows, local = rows.index_select(0, order), local.index_select(0, order)
        y, aux, counts = type(experts[0]).run_grouped(experts, rows, row_groups(local, self.num_local))
        if order is not None:
            y = y.index_select(
                0, torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
            )
        return y, aux, counts

    def start(self, x: torch.Tensor) -> InFlight:
        """Route x [B, N, D] and issue the exchange of the samples; :meth:`finish` completes the layer."""
        b, sample_shape = x.shape[0], x.shape[1:]
        routes: Routes = self.gate(x.mean(dim=1))
        flat = x.reshape(b, -1)
        k = routes.experts.shape[0]
        if routes.capacity is None:  # dropless: the send buffer is the k * B routes sorted by global expert
            slots = (routes.counts.cumsum(0) - routes.counts)[routes.experts] + routes.position
            local = torch.empty(k * b, dtype=torch.long, device=x.device)
            local.scatter_(0, slots.reshape(-1), routes.experts.reshape(-1))
            buffer_rows = k * b
        else:
            slots, local, dest_cap = self._static_layout(routes)
            buffer_rows = self.ep_size * dest_cap
        # slot -> source sample; one gather builds the send buffer. Drop mode's padding slots copy sample 0:
        # their rows are left out of every statistic and their outputs are never read
        source = torch.zeros(buffer_rows + 1, dtype=torch.long, device=x.device)
        source.scatter_(0, slots.reshape(-1), torch.arange(b, device=x.device).repeat(k))
        send = flat.index_select(0, source[:-1])
        if self.ep_size == 1:
            return InFlight(routes, slots, sample_shape, send, local, None)

        # every rank runs every exchange of every layer every step (a rank that skipped one would hang the group)
        group, e_local = self._group(), self.num_local
        if routes.capacity is None:
            recv_counts = exchange_ints(routes.counts, group, self.traffic)  # [ep * E_local] from each source
            host = torch.cat([routes.counts, recv_counts]).tolist()  # the layer's one host read
            send_rows = [sum(host[r * e_local : (r + 1) * e_local]) for r in range(self.ep_size)]
            mine = host[self.ep_size * e_local :]
            recv_rows = [sum(mine[r * e_local : (r + 1) * e_local]) for r in range(self.ep_size)]
            ids = torch.arange(e_local, device=x.device).repeat(self.ep_size)
            local = torch.repeat_interleave(ids, recv_counts, output_size=sum(recv_rows))
        else:
            send_rows = recv_rows = [dest_cap] * self.ep_size
            local = exchange_ints(local, group, self.traffic)  # the expert id of every slot, padding included
        received, pending = start_exchange(send, group, send_rows, recv_rows, self.traffic)
        return InFlight(routes, slots, sample_shape, received, local, pending)

    def finish(self, f: InFlight) -> torch.Tensor:
        """Wait for the samples, run the local experts, send the outputs back and combine them per sample."""
        routes, b = f.routes, f.slots.shape[1]
        received = f.received if f.pending is None else wait_exchange(f.received, f.pending)
        rows = received.view(received.shape[0], *f.sample_shape)
        y, aux, sub_counts = self._run_experts(rows, f.local)
        back = y.to(rows.dtype).reshape(rows.shape[0], y.shape[1:].numel())
        if f.pending is not None:  # the outputs go back the way the samples came
            back = exchange(back, f.pending.group, f.pending.recv_rows, f.pending.send_rows, self.traffic)

        # a dropped route reads row 0 with weight 0
        routed = back.index_select(0, f.slots.reshape(-1).clamp(max=back.shape[0] - 1)).view(*f.slots.shape, -1)
        weights = (routes.weights if routes.kept is None else routes.weights * routes.kept).to(routed.dtype)
        combined = (routed * weights.unsqueeze(-1)).sum(dim=0)  # [B, S]

        self.last = DispatchStats(
            prob_sum=routes.probs.sum(dim=0),
            counts=routes.counts,
            experts=routes.experts,
            weights=routes.weights,
            batch=torch.tensor(float(b), device=back.device),
            dropped=routes.dropped,
            token_aux=aux.float().sum(),
            sub_counts=sub_counts,
            rows_computed=max(rows.shape[0], 1),  # an empty rank runs one padding row
        )
        return combined.view(b, *f.sample_shape[:-1], self.out_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, N, D] tokens of whole samples
        return self.finish(self.start(x))


class SampleMoE(MoE):
    """An image-level MoE layer over whole samples, expert-parallel over ``ep_size`` ranks.

    ``make_expert()`` builds one expert, a module class with ``run_grouped(experts, rows [n, N, D], groups) ->
    (y [n, N, out_width], aux [E_local], counts [E_local, ...])`` that runs all local experts on rows sorted by
    expert, padding rows left out of aux and counts, and ``reference(x)``, the same for one expert, unbatched;
    each expert is initialised from ``expert_seed(seed, layer, global_id)``. ``scorer`` turns the pooled
    sample into router logits; ``moe`` gives the expert count, top-k, capacity, dropping and expert compute.
    """

    def __init__(
        self,
        make_expert: Callable[[], nn.Module],
        scorer: nn.Module,
        *,
        moe: ImageMoEConfig,
        out_width: int,
        ep_size: int,
        seed: int,
        layer: int,
        ep_rank: int | None = None,
    ) -> None:
        nn.Module.__init__(self)  # MoE.__init__ builds DeepSpeed's token-routing layer, which we replace
        experts = moe.experts
        if experts % ep_size:
            raise ValueError(f"experts={experts} is not divisible by ep_size={ep_size}")
        self.use_residual = False
        self.enable_expert_tensor_parallelism = False
        self.ep_size = ep_size
        self.expert_group_name = f"ep_size_{ep_size}"
        self.num_experts = experts
        self.num_local_experts = experts // ep_size
        ep_rank = default_ep_rank(ep_size) if ep_rank is None else ep_rank

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(expert_seed(seed, layer, -1))
            container = Experts(make_expert(), self.num_local_experts, self.expert_group_name)
            for j, expert in enumerate(container.deepspeed_experts):
                torch.manual_seed(expert_seed(seed, layer, ep_rank * self.num_local_experts + j))
                expert.load_state_dict(make_expert().state_dict())
        gate = SampleGate(scorer, experts, moe.top_k, moe.capacity_factor, moe.drop_tokens)
        self.deepspeed_moe = SampleDispatcher(
            gate,
            container,
            ep_size=ep_size,
            num_local=self.num_local_experts,
            out_width=out_width,
            expert_compute=moe.expert_compute,
        )
        self.deepspeed_moe.expected_ep_rank = ep_rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deepspeed_moe(x)

    def start(self, x: torch.Tensor) -> InFlight:
        """Route the samples and issue their exchange (work that does not need them can run meanwhile)."""
        return self.deepspeed_moe.start(x)

    def finish(self, flight: InFlight) -> torch.Tensor:
        """Complete a :meth:`start`: the experts' outputs, combined per sample."""
        return self.deepspeed_moe.finish(flight)

    def set_temperature(self, value: float) -> None:
        """Set the router's softmax temperature (annealed during pre-training)."""
        self.deepspeed_moe.gate.temperature.fill_(value)
