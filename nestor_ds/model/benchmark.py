"""Forward+backward throughput of model variants, measured in one run so ratios are fair."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from nestor_ds.config.schema import ModelConfig
from nestor_ds.model.registry import build_model


@dataclass
class BenchResult:
    name: str
    samples_per_s: float
    ms_per_step: float
    peak_mem_mb: float


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
    return BenchResult(name, batch * steps / elapsed, 1000 * elapsed / steps, peak)
