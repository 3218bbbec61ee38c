"""Counters for what a piece of torch code costs: FLOPs, kernels run, and the times the host waits for the device.

Used by the model benchmarks, the training loop's ``train.count_host_syncs`` probe and the study reports.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

Shape = Sequence[int]


def _register_missing_flop_formulas() -> None:
    """torch's FLOP counter has no formula for grouped GEMM nor for SDPA's CPU kernels: count them as the
    matmuls and attention they are (2 * M * K * N; the same attention formula as the GPU kernels)."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    if aten._grouped_mm in fc.flop_registry:
        return

    @fc.register_flop_formula(aten._grouped_mm)
    def grouped_mm_flop(a_shape: Shape, b_shape: Shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        if len(a_shape) == 2 and len(b_shape) == 3:  # [M, K] x [G, K, N]: every row meets one group
            return 2 * a_shape[0] * a_shape[1] * b_shape[2]
        if len(a_shape) == 2 and len(b_shape) == 2:  # [K, M] x [M, N] -> [G, K, N]: groups split M
            return 2 * a_shape[0] * a_shape[1] * b_shape[1]
        if len(a_shape) == 3 and len(b_shape) == 2:  # [G, M, K] x [K, N]
            return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[1]
        return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[2]

    @fc.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def cpu_sdpa_flop(
        query_shape: Shape, key_shape: Shape, value_shape: Shape, *args: Any, out_shape: Any = None, **kwargs: Any
    ) -> int:
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

    @fc.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def cpu_sdpa_backward_flop(
        grad_out_shape: Shape,
        query_shape: Shape,
        key_shape: Shape,
        value_shape: Shape,
        *args: Any,
        out_shape: Any = None,
        **kwargs: Any,
    ) -> int:
        return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one ``fn()`` (forward and backward), by ``torch.utils.flop_counter``. Only ops that ran are
    counted: with grouped experts, the chosen experts' rows (complex AFNO matmuls count as real ones, as torch
    counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_missing_flop_formulas()
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# Tensor methods that hand device data to Python without passing through an ATen op
HOST_READ_METHODS = ("tolist", "numpy", "cpu")
# ATen ops that wait for the device: a scalar read (``.item()``, ``bool(t)``, ``int(t)``, and the checks inside
# ops such as ``one_hot``), or an output whose size depends on the data
HOST_SYNC_OPS = (
    "_local_scalar_dense",
    "nonzero",
    "masked_select",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "bincount",
)


class _SyncOps(TorchDispatchMode):
    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        name = func.overloadpacket.__name__
        if name in HOST_SYNC_OPS:
            self.counts["item" if name == "_local_scalar_dense" else name] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def count_host_syncs() -> Iterator[Counter]:
    """Count, by name, what makes the host wait for the device while active: the sync ops above (also
    inside other ops and in autograd's backward on this thread) and the host-read tensor methods."""
    counts: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READ_METHODS}

    def counting(name: str, fn: Callable) -> Callable:
        def wrapper(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            counts[name] += 1
            return fn(self, *args, **kwargs)

        return wrapper

    for name, fn in originals.items():
        setattr(torch.Tensor, name, counting(name, fn))
    try:
        with _SyncOps(counts):
            yield counts
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


# ATen ops that only make a new view of a tensor's memory (or return it as it is): no kernel runs,
# unless the op had to copy, which shows as a nested op that is not itself one of these
METADATA_OPS = frozenset(
    f"aten::{name}"
    for name in (
        "view",
        "_unsafe_view",
        "reshape",
        "_reshape_alias",
        "view_as",
        "flatten",
        "unflatten",
        "transpose",
        "t",
        "permute",
        "unsqueeze",
        "squeeze",
        "expand",
        "expand_as",
        "select",
        "slice",
        "narrow",
        "chunk",
        "split",
        "split_with_sizes",
        "unbind",
        "as_strided",
        "alias",
        "detach",
        "detach_",
        "lift_fresh",
        "to",
        "contiguous",
        "numpy_T",
        "movedim",
        "diagonal",
        "unfold",
        "real",
        "view_as_real",
        "view_as_complex",
        "empty",
        "empty_like",
        "empty_strided",
        "resolve_conj",
        "resolve_neg",
        "result_type",
        "imag",
        "conj",
        "_conj",
        "_neg_view",
    )
)


def count_ops(fn: Callable[[], object]) -> int:
    """ATen operator calls that run a kernel in one ``fn()`` (torch profiler, CPU), forward and autograd's
    backward: a proxy for GPU kernel launches. Only outermost ops count (a composite's parts, the
    per-group loop of CPU grouped GEMM, which is one kernel on a GPU, are not counted again); ops that
    only make a view count only when they had to copy."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()

    def nested_in_aten(event: Any) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return True
            parent = parent.cpu_parent
        return False

    def runs_kernel(event: Any) -> bool:
        if event.name not in METADATA_OPS:
            return True
        return any(runs_kernel(child) for child in event.cpu_children if child.name.startswith("aten::"))

    return sum(1 for e in prof.events() if e.name.startswith("aten::") and not nested_in_aten(e) and runs_kernel(e))
