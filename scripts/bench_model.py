"""Forward+backward of NESTOR and DPOT at Tiny and S size, and of NESTOR's one-expert-at-a-time loop
(``model.moe.expert_compute: loop``, the unoptimised reference), measured in one run.

Prints samples/s, tokens/s, TFLOP/s (FLOPs counted by torch.utils.flop_counter, active experts only),
MFU against the device's bf16 peak where known, peak memory, host syncs and kernel-running ATen ops per
step, and NESTOR's ratios to its loop reference.
CPU default: resolution 32, batch 8, Tiny only.
GPU: --device cuda --dtype bf16 --resolution 128 --batch 32 --sizes tiny s
--ep: instead, what expert parallelism costs on real gloo ranks, for the same global batch: NESTOR-Tiny at
ep 1, 2, 3 and MoE-POT-Ti at ep 1, 2, 4 (width 128, resolution 32): FLOPs summed over ranks against ep 1,
samples the experts ran per real route, all-to-all bytes and time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nestor_ds.config import load_config
from nestor_ds.model.benchmark import BenchResult, bench_forward_backward, device_peak_tflops

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {
    ("nestor", "tiny"): "nestor_tiny.yaml",
    ("dpot", "tiny"): "dpot_ti.yaml",
    ("nestor", "s"): "nestor_s.yaml",
    ("dpot", "s"): "dpot_s.yaml",
}


def print_table(results: list[BenchResult], title: str, peak: float | None) -> None:
    """One row per result; NESTOR rows also as ratios to their loop reference (the row named '... loop')."""
    print(title)
    print(
        f"{'model':<18} {'samples/s':>10} {'tokens/s':>11} {'TFLOP/s':>8} {'MFU':>7} {'peak MiB':>9} "
        f"{'syncs':>6} {'ATen ops':>9} {'speed vs loop':>14} {'ops vs loop':>12}"
    )
    by_name = {r.name: r for r in results}
    for r in results:
        mfu = f"{100 * r.tflops / peak:6.2f}%" if peak else "     -"
        ref = by_name.get(f"{r.name} loop") if not r.name.endswith("loop") else None
        speed = f"{r.samples_per_s / ref.samples_per_s:13.2f}x" if ref else f"{'-':>14}"
        ops = f"{ref.ops / r.ops:11.2f}x" if ref else f"{'-':>12}"
        print(
            f"{r.name:<18} {r.samples_per_s:>10.1f} {r.tokens_per_s:>11.0f} {r.tflops:>8.3f} {mfu:>7} "
            f"{r.peak_mem_mb:>9.0f} {r.host_syncs:>6d} {r.ops:>9d} {speed} {ops}"
        )


def ep_tables() -> None:
    """NESTOR and MoE-POT at their ep sizes, on real gloo ranks."""
    import tempfile

    from nestor_ds.model.ep_benchmark import EP_CASES, bench_shape, format_ep_table, measure_eps

    for variant, config, batch in (("nestor", "nestor_tiny.yaml", 12), ("moepot", "moepot_ti.yaml", 8)):
        cfg = bench_shape(load_config(REPO / "configs" / config).model)
        with tempfile.TemporaryDirectory() as tmp:
            print(
                format_ep_table(
                    f"{variant} ({config}, width 128, resolution 32)",
                    measure_eps(cfg, EP_CASES[variant], batch, Path(tmp)),
                )
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--sizes", nargs="+", choices=["tiny", "s"], default=["tiny"])
    ap.add_argument("--compile", action="store_true", help="model.compile=true for the optimised rows")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, if not known here")
    ap.add_argument("--ep", action="store_true", help="the expert-parallel cost table instead (CPU, gloo)")
    args = ap.parse_args()
    if args.ep:
        ep_tables()
        return
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    results = []
    for size in args.sizes:
        for variant in ("nestor", "dpot"):
            base = load_config(REPO / "configs" / CONFIGS[variant, size]).model
            runs = [("grouped", f"{variant} {size}")] + (
                [("loop", f"{variant} {size} loop")] if variant == "nestor" else []
            )
            for compute, name in runs:
                cfg = type(base).model_validate(
                    {
                        **base.model_dump(),
                        "grid": [args.resolution] * 2,
                        "compile": args.compile and compute == "grouped",
                        "moe": {**base.moe.model_dump(), "expert_compute": compute},
                    }
                )
                results.append(
                    bench_forward_backward(name, cfg, args.batch, args.steps, args.warmup, args.device, dtype)
                )
    peak = args.peak_tflops or device_peak_tflops(args.device, dtype)
    where = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    )
    print_table(
        results,
        f"forward+backward, resolution {args.resolution}, batch {args.batch}, {args.dtype}, {where}"
        f"{', compiled' if args.compile else ''}; MFU against {peak or 'an unknown'} TFLOP/s",
        peak,
    )


if __name__ == "__main__":
    main()
