"""Forward+backward throughput of model variants, measured in one run so ratios are fair."""
from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from nestor_ds.config.schema import ModelConfig
from nestor_ds.model.registry import build_model


@dataclass
class BenchResult:
    name: str
    samples_per_s: float
    ms_per_step: float
    peak_mem_mb: float
    host_syncs: int  # device reads per forward+backward (count_host_syncs)
    ops: int  # outermost ATen ops per forward+backward (count_ops)


def bench_forward_backward(name: str, cfg: ModelConfig, batch: int, steps: int, warmup: int,
                           device: str, dtype: torch.dtype) -> BenchResult:
    model = build_model(cfg).to(device=device, dtype=dtype)
    x = torch.randn(batch, cfg.resolution, cfg.resolution, cfg.t_in, cfg.channels, device=device, dtype=dtype)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        out = model(x)
        (out.pred.float().square().mean() + out.aux_image + out.aux_token).backward()
        model.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
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
                       count_ops(step))


# Tensor methods that hand a device value to Python: on a GPU each one waits for the device to drain
HOST_SYNCS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__", "__index__")


@contextmanager
def count_host_syncs() -> Iterator[Counter]:
    """Count calls of the tensor methods that synchronise with the device, by name, while active."""
    counts: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in HOST_SYNCS}

    def counting(name: str, fn: Callable) -> Callable:
        def wrapper(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            counts[name] += 1
            return fn(self, *args, **kwargs)
        return wrapper

    for name, fn in originals.items():
        setattr(torch.Tensor, name, counting(name, fn))
    try:
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
    "empty_strided", "resolve_conj", "resolve_neg", "result_type",
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
