"""Forward+backward throughput of model variants, measured in one run so ratios are fair."""
from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nestor_ds.config.schema import ModelConfig
from nestor_ds.model.registry import build_model


@dataclass
class BenchResult:
    name: str
    samples_per_s: float
    ms_per_step: float
    peak_mem_mb: float
    host_syncs: int  # device reads per forward+backward (count_host_syncs)
    ops: int  # kernel-running ATen ops per forward+backward (count_ops)
    flops_per_sample: float  # forward+backward, counted by torch.utils.flop_counter (active experts only)
    tokens: int  # tokens per sample

    @property
    def tokens_per_s(self) -> float:
        return self.samples_per_s * self.tokens

    @property
    def tflops(self) -> float:
        return self.samples_per_s * self.flops_per_sample / 1e12


# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) of the GPUs this project is benchmarked on
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0}


def device_peak_tflops(device: str, dtype: torch.dtype) -> float | None:
    """The device's dense peak for ``dtype`` when known (bf16 on the GPUs above), else None (no MFU printed)."""
    if not device.startswith("cuda") or dtype != torch.bfloat16:
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def _register_missing_flop_formulas() -> None:
    """torch's FLOP counter has no formula for grouped GEMM nor for SDPA's CPU kernels: count them as the
    matmuls and attention they are (2 * M * K * N; the same attention formula as the GPU kernels)."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    if aten._grouped_mm in fc.flop_registry:
        return

    @fc.register_flop_formula(aten._grouped_mm)
    def grouped_mm_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
        if len(a_shape) == 2 and len(b_shape) == 3:  # [M, K] x [G, K, N]: every row meets one group
            return 2 * a_shape[0] * a_shape[1] * b_shape[2]
        if len(a_shape) == 2 and len(b_shape) == 2:  # [K, M] x [M, N] -> [G, K, N]: groups split M
            return 2 * a_shape[0] * a_shape[1] * b_shape[1]
        if len(a_shape) == 3 and len(b_shape) == 2:  # [G, M, K] x [K, N]
            return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[1]
        return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[2]

    @fc.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

    @fc.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                               **kwargs) -> int:  # noqa: ANN001
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


def bench_forward_backward(name: str, cfg: ModelConfig, batch: int, steps: int, warmup: int,
                           device: str, dtype: torch.dtype) -> BenchResult:
    model = build_model(cfg).to(device=device, dtype=dtype)
    x = torch.randn(batch, cfg.resolution, cfg.resolution, cfg.t_in, cfg.channels, device=device, dtype=dtype)
    cuda = device.startswith("cuda")

    def step() -> None:
        out = model(x)
        (out.pred.float().square().mean() + out.aux_image + out.aux_token).backward()
        model.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
    with count_host_syncs() as syncs:
        step()
    return BenchResult(name, batch * steps / elapsed, 1000 * elapsed / steps, peak, sum(syncs.values()),
                       count_ops(step), count_flops(step) / batch, cfg.tokens)


# Tensor methods that hand device data to Python without passing through an ATen op
HOST_READ_METHODS = ("tolist", "numpy", "cpu")
# ATen ops that wait for the device: a scalar read (``.item()``, ``bool(t)``, ``int(t)``, and the checks inside
# ops such as ``one_hot``), or an output whose size depends on the data
HOST_SYNC_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "_unique", "_unique2", "unique_dim",
                 "unique_consecutive", "bincount")


class _SyncOps(TorchDispatchMode):
    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
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
METADATA_OPS = frozenset(f"aten::{name}" for name in (
    "view", "_unsafe_view", "reshape", "_reshape_alias", "view_as", "flatten", "unflatten", "transpose", "t",
    "permute", "unsqueeze", "squeeze", "expand", "expand_as", "select", "slice", "narrow", "chunk", "split",
    "split_with_sizes", "unbind", "as_strided", "alias", "detach", "detach_", "lift_fresh", "to", "contiguous",
    "numpy_T", "movedim", "diagonal", "unfold", "real", "view_as_real", "view_as_complex", "empty", "empty_like",
    "empty_strided", "resolve_conj", "resolve_neg", "result_type", "imag", "conj", "_conj", "_neg_view",
))


def count_ops(fn: Callable[[], object]) -> int:
    """ATen operator calls that run a kernel in one ``fn()`` (torch profiler, CPU), forward and autograd's
    backward: a proxy for GPU kernel launches. Only outermost ops count (a composite's parts, the
    per-group loop of CPU grouped GEMM, which is one kernel on a GPU, are not counted again); ops that
    only make a view count only when they had to copy."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()

    def nested_in_aten(event: object) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return True
            parent = parent.cpu_parent
        return False

    def runs_kernel(event: object) -> bool:
        if event.name not in METADATA_OPS:
            return True
        return any(runs_kernel(child) for child in event.cpu_children if child.name.startswith("aten::"))

    return sum(1 for e in prof.events() if e.name.startswith("aten::") and not nested_in_aten(e) and runs_kernel(e))
