"""Full training steps (a real ``deepspeed launch/train.py`` run of N steps on shard tars) of NESTOR and DPOT,
beside the forward+backward of the same model measured in this process, in one run.

Prints per GPU: samples/s, tokens/s, TFLOP/s (FLOPs by torch.utils.flop_counter, active experts only), MFU
against the device's bf16 peak where known, peak memory, device reads per step, the step's cost against
forward+backward alone, and NESTOR's speed against its one-expert-at-a-time loop reference.
CPU default: 1 rank, resolution 32, batch 4, 6 steps, Tiny only.
GPU: --device cuda --gpus 1 --resolution 128 --batch 32 --steps 40 --sizes tiny s
--ep-compare (2+ ranks): NESTOR trained at ep_size 1 and at ep_size = ranks, the same global batch: time per
sample of each, and the time ep's ranks spent blocked in all-to-alls (``perf/alltoall_share``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from nestor_ds.config import load_config
from nestor_ds.engine.bench_train import REPO, run_training, write_bench_shards
from nestor_ds.model.benchmark import bench_forward_backward, device_peak_tflops

CONFIGS = {
    ("nestor", "tiny"): "nestor_tiny.yaml",
    ("dpot", "tiny"): "dpot_ti.yaml",
    ("nestor", "s"): "nestor_s.yaml",
    ("dpot", "s"): "dpot_s.yaml",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--gpus", type=int, default=1, help="ranks (GPUs, or CPU processes)")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4, help="micro-batch per rank")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--sizes", nargs="+", choices=["tiny", "s"], default=["tiny"])
    ap.add_argument("--ds-config", type=Path, default=None, help="default: cpu_fp32 on CPU, zero1_bf16 on GPU")
    ap.add_argument("--compile", action="store_true", help="model.compile=true for the optimised rows")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="keep shards and runs here")
    ap.add_argument("--ep-compare", action="store_true", help="NESTOR at ep_size 1 and ep_size=ranks (2+ ranks)")
    ap.add_argument("--no-loop", action="store_true", help="leave out NESTOR's one-expert-at-a-time reference run")
    args = ap.parse_args()
    cpu = args.device == "cpu"
    ds_config = args.ds_config or REPO / "ds_configs" / ("cpu_fp32.json" if cpu else "zero1_bf16.json")
    dtype = torch.float32 if "fp32" in ds_config.name else torch.bfloat16
    device = "cpu" if cpu else "cuda"
    if cpu:
        torch.set_num_threads(1)  # as each training rank runs (OMP_NUM_THREADS=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        custom = write_bench_shards(root / "shards", args.resolution)
        for size in args.sizes:
            for variant in ("nestor", "dpot"):
                config = REPO / "configs" / CONFIGS[variant, size]
                for compute in ("grouped", "loop") if variant == "nestor" and not args.no_loop else ("grouped",):
                    name = f"{variant} {size}" + (" loop" if compute == "loop" else "")
                    model_over = {"compile": args.compile and compute == "grouped"}
                    if variant == "nestor":
                        base = load_config(config).model.moe.model_dump()
                        model_over["moe"] = {**base, "expert_compute": compute}
                    run = run_training(
                        name,
                        config,
                        {"model": model_over},
                        ds_config,
                        root / "shards",
                        custom,
                        root / "runs" / name.replace(" ", "_"),
                        args.gpus,
                        args.steps,
                        args.batch,
                        args.resolution,
                        args.device,
                    )
                    cfg = load_config(config).model
                    cfg = type(cfg).model_validate({**cfg.model_dump(), "grid": [args.resolution] * 2, **model_over})
                    fb = bench_forward_backward(name, cfg, args.batch, max(2, args.steps // 2), 1, device, dtype)
                    rows.append((run, fb))
    peak = args.peak_tflops or device_peak_tflops(device, dtype)
    where = torch.cuda.get_device_name() if not cpu else "CPU, 1 thread per rank"
    print(
        f"training step ({ds_config.name}, {args.gpus} rank(s), micro-batch {args.batch}, resolution "
        f"{args.resolution}, {where}); forward+backward of the same model in this process"
    )
    print(
        f"{'model':<18} {'samples/s':>10} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>7} {'peak MiB':>9} {'syncs':>6} "
        f"{'fwd+bwd/s':>10} {'step cost':>10} {'vs loop':>8}"
    )
    by_name = {run.name: run for run, _ in rows}
    for run, fb in rows:
        tflops = run.samples_per_s * fb.flops_per_sample / 1e12
        mfu = f"{100 * tflops / peak:6.2f}%" if peak else "     -"
        ref = by_name.get(f"{run.name} loop")
        vs = f"{run.samples_per_s / ref.samples_per_s:7.2f}x" if ref else f"{'-':>8}"
        print(
            f"{run.name:<18} {run.samples_per_s:>10.1f} {run.samples_per_s * fb.tokens:>10.0f} {tflops:>8.3f} "
            f"{mfu:>7} {run.peak_mem_mib:>9.0f} {run.host_syncs:>6.0f} {fb.samples_per_s:>10.1f} "
            f"{fb.samples_per_s / run.samples_per_s:>9.2f}x {vs}"
        )
    print("step cost: forward+backward samples/s over the full step's (1.00x: the step adds nothing)")
    if args.ep_compare:
        with tempfile.TemporaryDirectory() as tmp:
            root = args.keep or Path(tmp)
            compare_ep(args, ds_config, root / "ep_compare", write_bench_shards(root / "ep_shards", args.resolution))


def compare_ep(args: argparse.Namespace, ds_config: Path, root: Path, custom: dict) -> None:
    """NESTOR trained at ep 1 and at ep = ranks on the same ranks and batches: is ep slower per sample by more than
    the time it spent in all-to-alls?"""
    config = REPO / "configs" / CONFIGS["nestor", args.sizes[0]]
    runs = []
    for ep in (1, args.gpus):
        name = f"nestor ep{ep}"
        runs.append(
            run_training(
                name,
                config,
                {"parallel": {"ep_size": ep}},
                ds_config,
                root.parent / "ep_shards",
                custom,
                root / name.replace(" ", "_"),
                args.gpus,
                args.steps,
                args.batch,
                args.resolution,
                args.device,
            )
        )
    print(f"\nexpert parallelism, NESTOR {args.sizes[0]}, {args.gpus} ranks, micro-batch {args.batch} per rank:")
    print(f"{'ep':>3} {'samples/s':>10} {'ms/sample':>10} {'a2a share':>10} {'a2a ms/sample':>14}")
    for ep, run in zip((1, args.gpus), runs):
        ms = 1e3 / (run.samples_per_s * args.gpus)  # per sample of the global batch
        print(
            f"{ep:>3} {run.samples_per_s * args.gpus:>10.1f} {ms:>10.2f} {run.alltoall_share:>10.1%} "
            f"{ms * run.alltoall_share:>14.2f}"
        )
    one, many = (1e3 / (r.samples_per_s * args.gpus) for r in runs)
    a2a = many * runs[1].alltoall_share
    verdict = "within" if many - one <= a2a else "MORE than"
    print(
        f"ep {args.gpus} is slower than ep 1 by {many - one:+.2f} ms/sample: {verdict} its all-to-all time ({a2a:.2f})"
    )


if __name__ == "__main__":
    main()
