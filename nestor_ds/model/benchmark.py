"""Forward+backward throughput of model variants, measured in one run so ratios are fair."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from nestor_ds.config.schema import ModelConfig
from nestor_ds.model.registry import build_model
from nestor_ds.profiling import count_flops, count_host_syncs, count_ops


@dataclass
class BenchResult:
    """Forward+backward figures of one model variant."""

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
        """Tokens (patches) per second."""
        return self.samples_per_s * self.tokens

    @property
    def tflops(self) -> float:
        """Achieved TFLOP/s from the counted FLOPs per sample."""
        return self.samples_per_s * self.flops_per_sample / 1e12


# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) of the GPUs this project is benchmarked on
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0}


def device_peak_tflops(device: str, dtype: torch.dtype) -> float | None:
    """The device's dense peak for ``dtype`` when known (bf16 on the GPUs above), else None (no MFU printed)."""
    if not device.startswith("cuda") or dtype != torch.bfloat16:
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def bench_forward_backward(
    name: str, cfg: ModelConfig, batch: int, steps: int, warmup: int, device: str, dtype: torch.dtype
) -> BenchResult:
    """Time ``steps`` forward+backward passes of ``cfg``'s model after ``warmup``; count syncs, ops and FLOPs."""
    model = build_model(cfg).to(device=device, dtype=dtype)
    x = torch.randn(cfg.input_shape(batch), device=device, dtype=dtype)
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
    return BenchResult(
        name,
        batch * steps / elapsed,
        1000 * elapsed / steps,
        peak,
        sum(syncs.values()),
        count_ops(step),
        count_flops(step) / batch,
        cfg.tokens,
    )
