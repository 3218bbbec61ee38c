"""The all-to-all that moves whole samples between expert-parallel ranks: variable splits, issued asynchronously.

DeepSpeed's ``_AllToAll`` moves equal splits and blocks until done. Dropless dispatch sends each rank exactly
the routes it receives (unequal splits), and NESTOR's shared AFNO path does not need the exchanged samples, so
the exchange is started first and waited for after the AFNO path ran. Two autograd functions carry that:
``_Start`` issues ``all_to_all_single(..., async_op=True)`` and returns the (not yet filled) receive buffer;
``_Wait`` waits for it. The backward pass sends gradients the opposite way with the splits swapped (blocking).
``Traffic`` counts what every call hands to the backend, forward and backward, and the time the host waited.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.profiler import record_function


@dataclass
class Traffic:
    """What one rank's exchanges moved: bytes to other ranks, bytes to itself (a local copy, no link), calls, and
    the seconds the host spent blocked on them (send + wait; on a GPU the host does not wait for NCCL, so there
    only the bytes mean something)."""

    bytes_out: int = 0
    bytes_to_self: int = 0
    calls: int = 0
    seconds: float = 0.0

    def add(self, rows_out: list[int], row_bytes: int, rank: int, seconds: float) -> None:
        """Record one all-to-all: ``rows_out[j]`` rows of ``row_bytes`` each sent to group rank j."""
        self.calls += 1
        self.bytes_out += sum(r for j, r in enumerate(rows_out) if j != rank) * row_bytes
        self.bytes_to_self += rows_out[rank] * row_bytes
        self.seconds += seconds

    def reset(self) -> None:
        """Start counting from zero (the benchmarks count one step)."""
        self.bytes_out, self.bytes_to_self, self.calls, self.seconds = 0, 0, 0, 0.0


@dataclass
class Pending:
    """One exchange in flight: the backend's work handle, and what it moves (rows per peer, both ways)."""

    group: dist.ProcessGroup
    send_rows: list[int]
    recv_rows: list[int]
    traffic: Traffic
    work: Any = field(default=None, repr=False)
    started: float = 0.0


def _all_to_all(
    x: torch.Tensor, p: Pending, send_rows: list[int], recv_rows: list[int], async_op: bool
) -> tuple[torch.Tensor, Any]:
    x = x.contiguous()
    out = x.new_empty((sum(recv_rows), *x.shape[1:]))
    row_bytes = x.shape[1:].numel() * x.element_size()
    t0 = time.perf_counter()
    work = dist.all_to_all_single(out, x, recv_rows, send_rows, group=p.group, async_op=async_op)
    p.traffic.add(send_rows, row_bytes, dist.get_rank(p.group), time.perf_counter() - t0)
    return out, work


class _Start(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: Pending) -> torch.Tensor:
        with record_function("nestor.alltoall_issue"):  # named in profiler traces (scripts/trace_overlap.py)
            out, p.work = _all_to_all(x, p, p.send_rows, p.recv_rows, async_op=True)
        ctx.pending = p
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        p = ctx.pending
        out, _ = _all_to_all(grad, p, p.recv_rows, p.send_rows, async_op=False)
        return out, None


class _Wait(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: Pending) -> torch.Tensor:
        t0 = time.perf_counter()
        with record_function("nestor.alltoall_wait"):
            p.work.wait()
        p.work = None  # the handle holds the buffers: kept, it would tie them into a cycle with the graph
        p.traffic.seconds += time.perf_counter() - t0
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


@torch.compiler.disable  # host-side communication and timing: a graph break, never traced
def start_exchange(
    x: torch.Tensor, group: dist.ProcessGroup, send_rows: list[int], recv_rows: list[int], traffic: Traffic
) -> tuple[torch.Tensor, Pending]:
    """Issue the all-to-all of ``x``'s rows (``send_rows[j]`` to group rank j, in order; ``recv_rows[j]`` from it);
    returns the receive buffer, valid only after :func:`wait_exchange`."""
    p = Pending(group, send_rows, recv_rows, traffic)
    return _Start.apply(x, p), p


@torch.compiler.disable  # host-side communication and timing: a graph break, never traced
def wait_exchange(buffer: torch.Tensor, p: Pending) -> torch.Tensor:
    """The received rows of a :func:`start_exchange`, once they have arrived (differentiable)."""
    return _Wait.apply(buffer, p)


@torch.compiler.disable  # host-side communication and timing: a graph break, never traced
def exchange(
    x: torch.Tensor, group: dist.ProcessGroup, send_rows: list[int], recv_rows: list[int], traffic: Traffic
) -> torch.Tensor:
    """A blocking, differentiable all-to-all with variable splits."""
    buffer, p = start_exchange(x, group, send_rows, recv_rows, traffic)
    return wait_exchange(buffer, p)


@torch.compiler.disable  # host-side communication and timing: a graph break, never traced
def exchange_ints(counts: torch.Tensor, group: dist.ProcessGroup, traffic: Traffic) -> torch.Tensor:
    """Equal splits of integers, blocking, no gradient: every rank's [ep * n] (n per destination) -> the [ep * n]
    the others send here (dropless: the per-expert route counts; drop mode: the expert id of every slot)."""
    ep = dist.get_world_size(group)
    per = counts.shape[0] // ep
    out = torch.empty_like(counts)
    t0 = time.perf_counter()
    dist.all_to_all_single(out, counts.contiguous(), group=group)
    traffic.add([per] * ep, counts.element_size(), dist.get_rank(group), time.perf_counter() - t0)
    return out
