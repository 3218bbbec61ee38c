"""Show NESTOR's expert all-to-all running behind its shared AFNO path: a profiler trace of 2 gloo ranks.

Each rank writes a Chrome trace of one forward+backward (open it in chrome://tracing or ui.perfetto.dev: the
``gloo:all_to_all`` on gloo's thread sits under ``nestor.shared_afno`` on the main thread); this script prints,
per MoE layer, how long gloo moved the samples, how much of that ran inside the AFNO path's window, and how long
the host still waited after it.

  python scripts/trace_overlap.py --out traces/   # keep the traces
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from nestor_ds.config import load_config
from nestor_ds.model.ep_benchmark import bench_shape, measure_ep, trace_overlap

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="keep the traces here")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8, help="global batch")
    args = ap.parse_args()
    cfg = bench_shape(load_config(REPO / "configs" / "nestor_tiny.yaml").model, args.width, args.resolution)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        measure_ep(cfg, 2, args.batch, root, trace=True)
        print(
            f"NESTOR-Tiny shape at width {args.width}, resolution {args.resolution}, global batch {args.batch}, 2 ranks"
        )
        print(f"{'rank':>4} {'layer':>5} {'exchange ms':>12} {'behind AFNO ms':>15} {'hidden':>7} {'host wait ms':>13}")
        for rank in range(2):
            for o in trace_overlap(root / "ep2" / f"trace_rank{rank}.json"):
                share = o.hidden_ms / o.exchange_ms if o.exchange_ms else 0.0
                print(
                    f"{rank:>4} {o.layer:>5} {o.exchange_ms:>12.2f} {o.hidden_ms:>15.2f} {share:>7.0%} "
                    f"{o.wait_ms:>13.3f}"
                )
        if args.out:
            print(f"traces: {root / 'ep2'}/trace_rank*.json")


if __name__ == "__main__":
    main()
