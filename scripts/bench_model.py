"""Benchmark forward+backward of the Tiny-shaped NESTOR against DPOT-Ti; prints samples/s and the ratio.

CPU default: resolution 32, batch 4. On a GPU: --device cuda --dtype bf16 --resolution 128 --batch 32.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nestor_ds.config import load_config
from nestor_ds.model.benchmark import bench_forward_backward

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    args = ap.parse_args()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    results = []
    for name, path in (("nestor", "nestor_tiny.yaml"), ("dpot", "dpot_ti.yaml")):
        cfg = load_config(REPO / "configs" / path).model.model_copy(update={"resolution": args.resolution})
        cfg = type(cfg).model_validate(cfg.model_dump())
        results.append(bench_forward_backward(name, cfg, args.batch, args.steps, args.warmup, args.device, dtype))
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"forward+backward, resolution {args.resolution}, batch {args.batch}, {args.dtype}, {where}")
    print(f"{'model':<8} {'samples/s':>10} {'ms/step':>9} {'peak MiB':>9} {'host syncs':>11} {'ATen ops':>9}")
    for r in results:
        print(f"{r.name:<8} {r.samples_per_s:>10.2f} {r.ms_per_step:>9.1f} {r.peak_mem_mb:>9.0f} {r.host_syncs:>11d}"
              f" {r.ops:>9d}")
    print(f"ratio nestor/dpot samples/s: {results[0].samples_per_s / results[1].samples_per_s:.3f}")


if __name__ == "__main__":
    main()
