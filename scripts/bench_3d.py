"""NESTOR-3D memory and speed per grid: forward+backward on real gloo ranks at ep_size 1 and 2 (the same
micro-batch per rank), printing per grid and ep: tokens, samples/s, peak resident memory per rank and the
activation memory autograd saves for backward per rank.

CPU default: grids 32^3 and 64^3, patch = grid / 8 (512 tokens), the 3-D quick path's widths.
GPU sizes (64^3, 128^3) need a GPU run of training itself: bench_train.py --device cuda with a 3-D config.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from nestor_ds.config import ModelConfig, load_config
from nestor_ds.model.ep_benchmark import measure_ep

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "quickstart_3d.yaml")
    ap.add_argument("--grids", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--latent", type=int, default=8, help="tokens per axis (patch = grid / latent)")
    ap.add_argument("--batch", type=int, default=2, help="samples per rank")
    ap.add_argument("--eps", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    base = load_config(args.config).model
    print(
        f"NESTOR-3D ({args.config.name} widths: D={base.width}, {base.blocks} blocks, {base.moe.experts} experts), "
        f"forward+backward, {args.batch} samples per rank, fp32 on CPU ranks over gloo"
    )
    print(f"{'grid':>6} {'tokens':>6} {'ep':>3} {'samples/s':>10} {'peak MiB/rank':>14} {'activations MiB/rank':>21}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.grids:
            cfg = ModelConfig.model_validate(
                {**base.model_dump(), "grid": [n, n, n], "patch_size": max(1, n // args.latent)}
            )
            for ep in args.eps:
                m = measure_ep(cfg, ep, args.batch * ep, Path(tmp) / f"g{n}")
                print(
                    f"{n:>5}^3 {cfg.tokens:>6} {ep:>3} {m.global_batch / m.step_s:>10.2f} {m.peak_rss_mib:>14.0f} "
                    f"{m.saved_mib:>21.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
