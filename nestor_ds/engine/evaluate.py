"""L2RE per data set, one step and full auto-regressive rollout, with every rank taking part.

Expert parallelism needs every rank of a group in every forward, so ranks run the
same number of equally shaped batches: a rank with fewer trajectories pads its
last batches with copies that carry zero weight.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from nestor_ds.config.schema import RunConfig
from nestor_ds.data.loader import Source
from nestor_ds.data.trajectories import iter_split, to_common_grid
from nestor_ds.engine.losses import l2re
from nestor_ds.model.output import ModelOutput

Forward = Callable[[torch.Tensor], ModelOutput]


@dataclass
class DatasetEval:
    name: str
    channels: list[str] = field(default_factory=list)
    trajectories: int = 0
    one_step: float = float("nan")
    rollout: float = float("nan")
    rollout_curve: np.ndarray = field(default_factory=lambda: np.zeros(0))
    image_load: np.ndarray | None = None  # [layers, E] routes per expert
    token_load: np.ndarray | None = None  # [layers, E, E']
    example: dict[str, np.ndarray] | None = None  # rank 0: input, truth, prediction of one sample


@dataclass
class EvalResult:
    datasets: list[DatasetEval]

    def rows(self) -> list[dict[str, object]]:
        return [{"dataset": d.name, "trajectories": d.trajectories, "l2re_one_step": d.one_step,
                 "l2re_rollout": d.rollout} for d in self.datasets]

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        out = {}
        for d in self.datasets:
            out[f"{prefix}/{d.name}/l2re_one_step"] = d.one_step
            out[f"{prefix}/{d.name}/l2re_rollout"] = d.rollout
        if self.datasets:
            out[f"{prefix}/mean/l2re_one_step"] = float(np.mean([d.one_step for d in self.datasets]))
            out[f"{prefix}/mean/l2re_rollout"] = float(np.mean([d.rollout for d in self.datasets]))
        return out


def _sum(t: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=op)
    return t


def _predict(forward: Forward, x: torch.Tensor, batch: int) -> tuple[torch.Tensor, ModelOutput | None]:
    """Forward in chunks of ``batch`` (x's length is equal on every rank, so the chunk count is too)."""
    preds, last = [], None
    for i in range(0, x.shape[0], batch):
        last = forward(x[i:i + batch])
        preds.append(last.pred.float())
    return torch.cat(preds), last


@torch.no_grad()
def evaluate(forward: Forward, cfg: RunConfig, sources: list[Source], rank: int, world: int,
             device: torch.device, dtype: torch.dtype = torch.float32) -> EvalResult:
    m = cfg.model
    batch = cfg.train.micro_batch_per_rank
    results = []
    for src in sources:
        trajs = list(iter_split(src, cfg.train.eval_trajectories))
        mine = trajs[rank::world]
        count = _sum(torch.tensor([len(mine)], device=device), dist.ReduceOp.MAX)
        n_batches = -(-int(count.item()) // batch)
        template = trajs[0]
        stats = torch.zeros(4, device=device, dtype=torch.float64)  # one-step sum, rollout sum, weight, n
        frames = template.data.shape[0] if src.rollout is None else min(template.data.shape[0], m.t_in + src.rollout)
        steps = max(0, frames - m.t_in)
        curve = torch.zeros(-(-steps // m.t_out), device=device, dtype=torch.float64)
        image_load = token_load = None
        example = None
        for b in range(n_batches):
            chunk = mine[b * batch:(b + 1) * batch]
            weight = torch.tensor([1.0] * len(chunk) + [0.0] * (batch - len(chunk)), device=device)
            chunk = chunk + [template] * (batch - len(chunk))  # zero-weight padding keeps shapes equal
            grids = [to_common_grid(t, src, m.resolution, m.channels, cfg.data.pad_value, cfg.data.score_points)
                     for t in chunk]
            traj = torch.stack([g[0] for g in grids]).to(device)  # [B, X, Y, T, C]
            mask = torch.stack([g[1] for g in grids]).to(device)  # [B, X, Y, 1, C]
            if src.rollout is not None:  # DPOT predicts t_test frames after the first t_in
                traj = traj[:, :, :, :m.t_in + src.rollout]
            total = traj.shape[3]

            # one step: every window of t_in true frames predicts the next t_out
            starts = list(range(0, total - m.t_in - m.t_out + 1))
            xs = torch.cat([traj[:, :, :, s:s + m.t_in] for s in starts])
            ys = torch.cat([traj[:, :, :, s + m.t_in:s + m.t_in + m.t_out] for s in starts])
            pred, out = _predict(forward, xs.to(dtype), batch)
            err = l2re(pred, ys, mask.repeat(len(starts), 1, 1, 1, 1)).view(len(starts), batch).mean(0)
            stats[0] += (err * weight).sum()

            # rollout: feed predictions back until the trajectory ends
            x = traj[:, :, :, :m.t_in]
            frames = []
            while m.t_in + sum(f.shape[3] for f in frames) < total:
                o = forward(x.to(dtype))
                p = o.pred.float() * mask
                frames.append(p)
                x = torch.cat([x, p], dim=3)[:, :, :, -m.t_in:]
                if o.image_load is not None:
                    image_load = o.image_load.double() if image_load is None else image_load + o.image_load.double()
                    token_load = o.token_load.double() if token_load is None else token_load + o.token_load.double()
            roll = torch.cat(frames, dim=3)[:, :, :, :total - m.t_in]
            truth = traj[:, :, :, m.t_in:]
            stats[1] += (l2re(roll, truth, mask) * weight).sum()
            for k in range(curve.numel()):
                sl = slice(k * m.t_out, (k + 1) * m.t_out)
                curve[k] += (l2re(roll[:, :, :, sl], truth[:, :, :, sl], mask) * weight).sum()
            stats[2] += weight.sum()
            if example is None and rank == 0 and len(mine):
                example = {"input": traj[0, :, :, m.t_in - 1].cpu().numpy(), "truth": ys[0, :, :, 0].cpu().numpy(),
                           "prediction": pred[0, :, :, 0].cpu().numpy(), "mask": mask[0, :, :, 0].cpu().numpy()}
            del out
        _sum(stats), _sum(curve)
        if image_load is not None:  # each expert-parallel group holds its own sum: add groups, count each once
            image_load = _sum(image_load) / cfg.parallel.ep_size
            token_load = _sum(token_load) / cfg.parallel.ep_size
        n = max(stats[2].item(), 1.0)
        results.append(DatasetEval(
            src.name, list(src.manifest["channels"]), int(stats[2].item()), stats[0].item() / n, stats[1].item() / n, (curve / n).cpu().numpy(),
            image_load.cpu().numpy() if image_load is not None else None,
            token_load.cpu().numpy() if token_load is not None else None, example,
        ))
    return EvalResult(results)


def format_table(result: EvalResult) -> str:
    lines = [f"{'data set':<34} {'traj':>5} {'L2RE 1-step':>12} {'L2RE rollout':>13}"]
    for d in result.datasets:
        lines.append(f"{d.name:<34} {d.trajectories:>5d} {d.one_step:>12.4f} {d.rollout:>13.4f}")
    return "\n".join(lines)
