"""Predict a training step on 8 to 1,024 GPUs and pick ep_size (nestor_ds.studies.scale_model).

FLOPs per sample and parameter counts are counted on the real model (on this CPU); MFU, peak and link
bandwidths are flags. Prints, per GPU count, every ep_size that divides the experts and the GPUs, with compute,
all-to-all and gradient-traffic time and the model states per GPU, then the pick and where EP stops paying.
--validate also runs the real model on 2 and 3 gloo ranks and compares the all-to-all bytes it counted with the
bytes predicted from that step's route counts.

  python scripts/scale_model.py                       # Tiny and S, 8/64/512/1024 GPUs, H100 SXM defaults
  python scripts/scale_model.py --configs configs/nestor_s.yaml --gpus 64 --mfu 0.25 --ib-gbits 200
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from nestor_ds.config import load_config
from nestor_ds.model.ep_benchmark import measure_ep
from nestor_ds.studies.scale_model import (
    Cluster,
    alltoall_bytes_of_routes,
    best_ep,
    ep_within_node,
    model_facts,
    scale_table,
)

REPO = Path(__file__).resolve().parent.parent


def validate() -> None:
    """Counted all-to-all bytes of a real 2- and 3-rank step against the prediction from its route counts."""
    cfg = load_config(REPO / "configs" / "nestor_tiny.yaml").model
    cfg = type(cfg).model_validate({**cfg.model_dump(), "width": 128, "grid": [32, 32]})
    facts = model_facts(cfg, "nestor tiny (width 128, resolution 32)")
    print(f"all-to-all bytes of one training step, {facts.name}, fp32, global batch 12, real gloo ranks:")
    print(f"{'ep':>3} {'counted':>12} {'predicted':>12} {'ratio':>7}   (a rank's rows to itself are not counted)")
    with tempfile.TemporaryDirectory() as tmp:
        for ep in (2, 3):
            m = measure_ep(cfg, ep, 12, Path(tmp))
            predicted = alltoall_bytes_of_routes(m.counts(), facts, 4)
            print(f"{ep:>3} {m.bytes_out:>12,d} {predicted:>12,d} {m.bytes_out / predicted:>7.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--configs",
        nargs="+",
        type=Path,
        default=[REPO / "configs" / "nestor_tiny.yaml", REPO / "configs" / "nestor_s.yaml"],
    )
    ap.add_argument("--gpus", nargs="+", type=int, default=[8, 64, 512, 1024])
    ap.add_argument("--micro-batch", type=int, default=32, help="samples per GPU per step")
    ap.add_argument("--zero", type=int, choices=[1, 2], default=1)
    ap.add_argument("--mfu", type=float, default=0.3, help="assumed or measured (scripts/bench_model.py)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    ap.add_argument("--nvlink-gbs", type=float, default=450.0, help="GB/s per direction per GPU inside a node")
    ap.add_argument("--ib-gbits", type=float, default=400.0, help="Gb/s per GPU between nodes")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--gpu-mem-gib", type=float, default=80.0)
    ap.add_argument("--validate", action="store_true", help="also check the byte count against real gloo ranks")
    args = ap.parse_args()
    cluster = Cluster(
        args.gpus_per_node, args.nvlink_gbs, args.ib_gbits / 8, args.peak_tflops, args.mfu, args.gpu_mem_gib
    )
    print(
        f"cluster: {cluster.gpus_per_node} GPUs/node, NVLink {cluster.nvlink_gbs:g} GB/s, IB {cluster.ib_gbs:g} GB/s "
        f"per GPU, {cluster.peak_tflops:g} TFLOP/s peak at MFU {cluster.mfu:g}; micro-batch {args.micro_batch}, "
        f"ZeRO {args.zero}, bf16; step = compute + all-to-all + gradients (an upper bound: no overlap counted)"
    )
    for config in args.configs:
        cfg = load_config(config).model
        facts = model_facts(cfg, config.stem)
        print(
            f"\n{facts.name}: {facts.flops_per_sample / 1e9:.1f} GFLOP per sample (fwd+bwd), "
            f"{facts.dense_params / 1e6:.1f}M dense + {facts.expert_params / 1e6:.1f}M expert parameters, "
            f"{facts.moe_layers} MoE layers, {facts.experts} experts top-{facts.top_k}, {facts.tokens} tokens"
        )
        print(
            f"{'GPUs':>5} {'ep':>3} {'EP link':>7} {'compute ms':>11} {'a2a ms':>8} {'grad ms':>8} {'step ms':>8} "
            f"{'states GiB':>11}"
        )
        rows = scale_table(facts, args.gpus, args.micro_batch, args.zero, cluster)
        for n in args.gpus:
            mine = [r for r in rows if r.gpus == n]
            for r in mine:
                link = "-" if r.ep == 1 else "NVLink" if ep_within_node(r.ep, cluster) else "IB"
                print(
                    f"{r.gpus:>5} {r.ep:>3} {link:>7} {1e3 * r.compute_s:>11.1f} {1e3 * r.alltoall_s:>8.2f} "
                    f"{1e3 * r.grad_s:>8.2f} {1e3 * r.step_s:>8.1f} {r.states_gib:>11.2f}"
                )
            pick = best_ep(facts, n, args.micro_batch, args.zero, cluster)
            rise = next((b.ep for a, b in zip(mine, mine[1:]) if b.step_s > a.step_s), None)
            stops = f"EP stops paying at ep {rise} (slower than the ep before it)" if rise else "every larger ep pays"
            print(f"{'':>5} pick ep_size={pick.ep} (fastest whose states fit {cluster.gpu_mem_gib:g} GiB); {stops}")
    if args.validate:
        print()
        validate()


if __name__ == "__main__":
    main()
