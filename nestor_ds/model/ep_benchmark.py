"""What expert parallelism costs, measured on real processes: FLOPs, rows the experts ran, all-to-all bytes and time.

``measure_ep(cfg, ep, global_batch)`` starts ``ep`` gloo ranks (``torch.distributed.run`` on this module); each
builds the model sharded ``ep`` ways, takes its share of one fixed global batch, and runs forward+backward:
once timed (with the bytes every all-to-all handed to the backend, forward and backward, and the route counts
of each MoE layer), once under ``torch.utils.flop_counter``. The driver sums the ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from nestor_ds.config.schema import ModelConfig
from nestor_ds.errors import UserError
from nestor_ds.profiling import count_flops


@dataclass
class RankMeasure:
    """One rank's forward+backward."""

    flops: int
    rows_computed: int  # samples its experts ran, over all MoE layers
    routes: int  # routes its own samples made (k per sample and layer)
    bytes_out: int  # bytes its all-to-alls sent to other ranks (forward + backward)
    bytes_to_self: int  # bytes its all-to-alls "sent" to itself (a local copy)
    alltoall_s: float  # seconds the host was blocked in all-to-alls
    step_s: float  # wall time of the timed forward+backward
    counts: list[list[int]]  # [layer][E] routes of its samples to each expert
    saved_bytes: int = 0  # activation memory: distinct storages autograd saved for backward in the forward
    peak_rss_mib: float = 0.0  # the rank process's peak resident memory (CPU)


@dataclass
class EPMeasure:
    """All ranks of one ``ep`` run, summed (time: the slowest rank)."""

    ep: int
    global_batch: int
    ranks: list[RankMeasure]

    @property
    def flops(self) -> int:
        """FLOPs of forward+backward summed over ranks."""
        return sum(r.flops for r in self.ranks)

    @property
    def rows_per_route(self) -> float:
        """Samples the experts ran per real route (1.0: no padding row ran)."""
        return sum(r.rows_computed for r in self.ranks) / max(1, sum(r.routes for r in self.ranks))

    @property
    def bytes_out(self) -> int:
        """All-to-all bytes between ranks, summed over ranks (a rank's copy to itself not counted)."""
        return sum(r.bytes_out for r in self.ranks)

    @property
    def step_s(self) -> float:
        """Forward+backward wall time of the slowest rank."""
        return max(r.step_s for r in self.ranks)

    @property
    def alltoall_s(self) -> float:
        """Host time blocked in all-to-alls, the most of any rank."""
        return max(r.alltoall_s for r in self.ranks)

    @property
    def saved_mib(self) -> float:
        """Activation memory saved for backward, the most of any rank (MiB)."""
        return max(r.saved_bytes for r in self.ranks) / 2**20

    @property
    def peak_rss_mib(self) -> float:
        """Peak resident memory, the most of any rank (MiB)."""
        return max(r.peak_rss_mib for r in self.ranks)

    def counts(self) -> list[list[list[int]]]:
        """[layer][source rank][expert] route counts of the timed step."""
        return [[r.counts[layer] for r in self.ranks] for layer in range(len(self.ranks[0].counts))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure_ep(
    cfg: ModelConfig, ep: int, global_batch: int, workdir: Path, seed: int = 0, trace: bool = False
) -> EPMeasure:
    """Forward+backward of ``cfg`` at ``ep_size=ep`` on ``ep`` CPU ranks over gloo, the global batch split evenly;
    ``trace``: each rank also writes a profiler trace of one forward+backward, ``<workdir>/ep<ep>/trace_rank<r>.json``
    (Chrome trace format: chrome://tracing or https://ui.perfetto.dev)."""
    if global_batch % ep:
        raise UserError(f"global batch {global_batch} does not split over {ep} ranks")
    if cfg.moe.experts % ep:
        raise UserError(f"model.moe.experts={cfg.moe.experts} does not split over ep_size={ep}")
    out = workdir / f"ep{ep}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").write_text(cfg.model_dump_json())
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(ep),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "nestor_ds.model.ep_benchmark",
        "--out",
        str(out),
        "--batch",
        str(global_batch),
        "--seed",
        str(seed),
        *(["--trace"] if trace else []),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ep={ep} benchmark ranks failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    ranks = [RankMeasure(**json.loads((out / f"rank{r}.json").read_text())) for r in range(ep)]
    return EPMeasure(ep, global_batch, ranks)


EP_CASES = {"nestor": (1, 2, 3), "moepot": (1, 2, 4)}  # ep sizes measured per variant (experts divisible)


def bench_shape(cfg: ModelConfig, width: int = 128, resolution: int = 32) -> ModelConfig:
    """``cfg`` at a width and resolution a CPU runs in seconds (experts, top-k, blocks and tokens' layout kept)."""
    return ModelConfig.model_validate({**cfg.model_dump(), "width": width, "grid": [resolution] * cfg.dims})


def measure_eps(cfg: ModelConfig, eps: tuple[int, ...], global_batch: int, workdir: Path) -> list[EPMeasure]:
    """:func:`measure_ep` at each ep size, the same global batch and weights."""
    return [measure_ep(cfg, ep, global_batch, workdir) for ep in eps]


def format_ep_table(name: str, runs: list[EPMeasure]) -> str:
    """FLOPs summed over ranks against ep 1, rows per route, bytes and time, one line per ep size."""
    base = runs[0]
    lines = [
        f"{name}: forward+backward, global batch {base.global_batch}, real gloo ranks (FLOPs summed over ranks)",
        f"{'ep':>3} {'GFLOP':>8} {'vs ep 1':>8} {'rows/route':>11} {'a2a MiB':>8} {'step ms':>8} {'a2a ms':>7}",
    ]
    for m in runs:
        lines.append(
            f"{m.ep:>3} {m.flops / 1e9:>8.3f} {m.flops / base.flops:>7.3f}x {m.rows_per_route:>11.3f} "
            f"{m.bytes_out / 2**20:>8.2f} {1e3 * m.step_s:>8.1f} {1e3 * m.alltoall_s:>7.1f}"
        )
    return "\n".join(lines)


@dataclass
class Overlap:
    """One MoE layer's sample exchange in a trace: how long the backend moved the samples, how much of that ran
    while the shared AFNO path computed, and how long the host then still waited."""

    layer: int
    exchange_ms: float  # the backend's all-to-all (gloo's worker thread)
    hidden_ms: float  # the part of it inside the shared AFNO path's window
    wait_ms: float  # the host's wait after the AFNO path (0: fully hidden)
    waited_before_afno: bool  # the host waited for the exchange before the AFNO path ran (no overlap possible)


def trace_overlap(trace: Path) -> list[Overlap]:
    """Each layer's dispatch exchange against its shared AFNO path, from one rank's profiler trace (forward)."""
    events = [e for e in json.loads(trace.read_text())["traceEvents"] if e.get("ph") == "X"]

    def named(name: str) -> list[dict]:
        return sorted((e for e in events if e["name"] == name), key=lambda e: e["ts"])

    issues, afnos, waits = named("nestor.alltoall_issue"), named("nestor.shared_afno"), named("nestor.alltoall_wait")
    backend = named("gloo:all_to_all")
    rows = []
    for layer, afno in enumerate(afnos):
        issue = max((i for i in issues if i["ts"] <= afno["ts"]), key=lambda i: i["ts"])
        wait = next(w for w in waits if w["ts"] >= afno["ts"] + afno["dur"])  # the return exchange's come later
        g = next(e for e in backend if e["ts"] >= issue["ts"] and e.get("tid") != issue.get("tid"))
        lo, hi = max(g["ts"], afno["ts"]), min(g["ts"] + g["dur"], afno["ts"] + afno["dur"])
        early = any(issue["ts"] <= w["ts"] < afno["ts"] for w in waits)
        rows.append(Overlap(layer, g["dur"] / 1e3, max(0.0, hi - lo) / 1e3, wait["dur"] / 1e3, early))
    return rows


def saved_for_backward(forward: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd keeps for backward while ``forward`` runs (activation memory)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(storages.values())


def _worker(out: Path, global_batch: int, seed: int, trace: bool) -> None:
    import deepspeed
    import torch.distributed as dist

    from nestor_ds.model.registry import build_model

    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = ModelConfig.model_validate_json((out / "model.json").read_text())
    model = build_model(cfg, ep_size=world, seed=seed)
    for layer in model.moe_layers:
        layer.set_deepspeed_parallelism()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(cfg.input_shape(global_batch), generator=g)
    per = global_batch // world
    x = x[rank * per : (rank + 1) * per]

    def step() -> None:
        out = model(x)
        (out.pred.float().square().mean() + 0.03 * out.aux_image + 1e-4 * out.aux_token).backward()

    step()  # warm-up
    model.zero_grad()
    saved = saved_for_backward(lambda: model(x))
    dispatchers = [layer.deepspeed_moe for layer in model.moe_layers]
    for d in dispatchers:
        d.traffic.reset()
    dist.barrier()
    t0 = time.perf_counter()
    step()
    step_s = time.perf_counter() - t0
    stats = [d.last for d in dispatchers if d.last is not None]
    measure = RankMeasure(
        flops=0,
        rows_computed=sum(s.rows_computed for s in stats),
        routes=sum(int(s.experts.numel()) for s in stats),
        bytes_out=sum(d.traffic.bytes_out for d in dispatchers),
        bytes_to_self=sum(d.traffic.bytes_to_self for d in dispatchers),
        alltoall_s=sum(d.traffic.seconds for d in dispatchers),
        step_s=step_s,
        counts=[s.counts.tolist() for s in stats],
        saved_bytes=saved,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    measure.flops = count_flops(step)
    (out / f"rank{rank}.json").write_text(json.dumps(asdict(measure)))
    if trace:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        prof.export_chrome_trace(str(out / f"trace_rank{rank}.json"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="one rank of measure_ep (started by torch.distributed.run)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trace", action="store_true")
    a = ap.parse_args()
    _worker(a.out, a.batch, a.seed, a.trace)
