"""L2RE per data set, one step and full auto-regressive rollout, with every rank taking part, beside the
baselines (persistence; linear extrapolation where t_in >= 2) scored on the same windows, points and channels.

Expert parallelism needs every rank of a group in every forward, so ranks run the
same number of equally shaped batches: a rank with fewer trajectories pads its
last batches with copies that carry zero weight. Rollouts feed predictions back
by the one rule of ``data.feedback`` (padded channels at the pad value, input-only
channels from the truth); the scoring mask is for scoring only.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np
import torch

from nestor_ds.config.schema import RunConfig
from nestor_ds.data.feedback import Feedback, channel_roles, inside_region
from nestor_ds.data.loader import Source, fit, region
from nestor_ds.data.set_stats import SetStats
from nestor_ds.data.shards import DataError
from nestor_ds.data.trajectories import iter_split, split_size, to_common_grid
from nestor_ds.engine.baselines import BASELINES
from nestor_ds.engine.losses import l2re
from nestor_ds.engine.step import in_set_units
from nestor_ds.model.collectives import sum_together
from nestor_ds.model.output import ModelOutput

Forward = Callable[[torch.Tensor], ModelOutput]
Forecast = Callable[[torch.Tensor], torch.Tensor]  # window [B, *space, t_in, C] -> frames [B, *space, t_out, C]


@dataclass
class Scores:
    """One forecaster's L2RE on one data set: one step, whole rollout, and per rollout step."""

    one_step: float = float("nan")
    rollout: float = float("nan")
    curve: np.ndarray = field(default_factory=lambda: np.zeros(0))


def ratio(model: float, baseline: float) -> float:
    """model / baseline: below 1 beats it."""
    return model / baseline if baseline > 0 and math.isfinite(baseline) else float("nan")


@dataclass
class DatasetEval:
    """One test set's scores: the model's and the baselines', one step, rollout and per horizon."""

    name: str
    channels: list[str] = field(default_factory=list)
    trajectories: int = 0
    one_step: float = float("nan")
    rollout: float = float("nan")
    rollout_curve: np.ndarray = field(default_factory=lambda: np.zeros(0))
    image_load: np.ndarray | None = None  # [layers, E] routes per expert
    token_load: np.ndarray | None = None  # [layers, E, E']
    example: dict[str, np.ndarray] | None = None  # rank 0: input, truth, prediction of one sample
    persistence: Scores = field(default_factory=Scores)
    linear: Scores | None = None  # None where t_in < 2

    @property
    def ratio_one_step(self) -> float:
        """Model L2RE over persistence, one step (below 1 beats copying the last frame)."""
        return ratio(self.one_step, self.persistence.one_step)

    @property
    def ratio_rollout(self) -> float:
        """Model L2RE over persistence, rollout."""
        return ratio(self.rollout, self.persistence.rollout)


@dataclass
class EvalResult:
    """An evaluation of every test set, with the tables and metrics made from it."""

    datasets: list[DatasetEval]

    def rows(self) -> list[dict[str, object]]:
        """One row per test set for the tables (eval_table.{txt,csv,json})."""
        nan = float("nan")
        return [
            {
                "dataset": d.name,
                "trajectories": d.trajectories,
                "l2re_one_step": d.one_step,
                "persistence_one_step": d.persistence.one_step,
                "linear_one_step": d.linear.one_step if d.linear else nan,
                "ratio_one_step": d.ratio_one_step,
                "l2re_rollout": d.rollout,
                "persistence_rollout": d.persistence.rollout,
                "linear_rollout": d.linear.rollout if d.linear else nan,
                "ratio_rollout": d.ratio_rollout,
            }
            for d in self.datasets
        ]

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        """The scores as MLflow metrics ``eval/<set>/...`` plus their means."""
        out: dict[str, float] = {}
        for row in self.rows():
            for key, value in row.items():
                if key not in ("dataset", "trajectories") and isinstance(value, float) and not math.isnan(value):
                    out[f"{prefix}/{row['dataset']}/{key}"] = value
        if self.datasets:
            for key in (
                "l2re_one_step",
                "l2re_rollout",
                "persistence_one_step",
                "persistence_rollout",
                "ratio_one_step",
                "ratio_rollout",
            ):
                values = [out[f"{prefix}/{d.name}/{key}"] for d in self.datasets if f"{prefix}/{d.name}/{key}" in out]
                if values:
                    out[f"{prefix}/mean/{key}"] = float(np.mean(values))
        return out

    def losing(self, which: str) -> list[str]:
        """Data sets on which the model is not better than persistence (``one_step`` or ``rollout``)."""
        return [d.name for d in self.datasets if not getattr(d, f"ratio_{which}") < 1]


def mid_plane(field: torch.Tensor) -> np.ndarray:
    """A [*space, C] field as the [X, Y, C] picture plots draw: itself in 2-D, the middle z-plane in 3-D."""
    while field.dim() > 3:
        field = field.select(2, field.shape[2] // 2)
    return field.cpu().numpy()


class _ModelForecast:
    """The model as a forecaster, in chunks of the micro-batch, summing the routing statistics of its rollouts."""

    def __init__(self, forward: Forward, batch: int, dtype: torch.dtype) -> None:
        self.forward, self.batch, self.dtype = forward, batch, dtype
        self.image_load: torch.Tensor | None = None
        self.token_load: torch.Tensor | None = None
        self.count_loads = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        preds = []
        for i in range(0, x.shape[0], self.batch):  # x's length is equal on every rank: so is the chunk count
            o = self.forward(x[i : i + self.batch].to(self.dtype))
            preds.append(o.pred.float())
            if self.count_loads and o.image_load is not None and o.token_load is not None:
                il, tl = o.image_load.double(), o.token_load.double()
                self.image_load = il if self.image_load is None else self.image_load + il
                self.token_load = tl if self.token_load is None else self.token_load + tl
        return torch.cat(preds)


def _score(
    forecast: Forecast,
    traj: torch.Tensor,
    mask: torch.Tensor,
    feedback: Feedback,
    t_in: int,
    t_out: int,
    model: _ModelForecast | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample: one-step L2RE [B], rollout L2RE [B], per-rollout-step L2RE [K, B], and the one-step
    predictions of the first window [B, *space, t_out, C]. Time is the second-to-last axis."""
    b, total = traj.shape[0], traj.shape[-2]
    # one step: every window of t_in true frames predicts the next t_out
    starts = list(range(0, total - t_in - t_out + 1))
    xs = torch.cat([traj[..., s : s + t_in, :] for s in starts])
    ys = torch.cat([traj[..., s + t_in : s + t_in + t_out, :] for s in starts])
    pred = forecast(xs)
    one = l2re(pred, ys, mask.repeat(len(starts), *([1] * (mask.dim() - 1)))).view(len(starts), b).mean(0)

    # rollout: predictions fed back by the one rule until the trajectory ends
    if model is not None:
        model.count_loads = True
    x, frames, done = traj[..., :t_in, :], [], 0
    while t_in + done < total:
        p = forecast(x)
        truth = traj[..., t_in + done : t_in + done + t_out, :]
        if truth.shape[-2] < t_out:  # the last bundle runs past the end: hold the last true frame
            held = truth[..., -1:, :].expand(*truth.shape[:-2], t_out - truth.shape[-2], truth.shape[-1])
            truth = torch.cat([truth, held], dim=-2)
        frames.append(p)
        x = feedback.next_window(x, p, truth)
        done += p.shape[-2]
    if model is not None:
        model.count_loads = False
    roll = torch.cat(frames, dim=-2)[..., : total - t_in, :]
    truth = traj[..., t_in:, :]
    curve = torch.stack(
        [l2re(roll[..., k : k + t_out, :], truth[..., k : k + t_out, :], mask) for k in range(0, total - t_in, t_out)]
    )
    return one, l2re(roll, truth, mask), curve, pred[:b]


@torch.no_grad()
def evaluate(
    forward: Forward,
    cfg: RunConfig,
    sources: list[Source],
    rank: int,
    world: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> EvalResult:
    """Model and baselines on every test set; collective: every rank calls it."""
    m = cfg.model
    batch = cfg.train.micro_batch_per_rank
    names = ["model", "persistence"] + (["linear"] if m.t_in >= 2 else [])
    results = []
    for src in sources:
        # each rank decodes only its own share (trajectory i goes to rank i % world): at 128^3 one is ~1 GB
        busiest = -(-split_size(src, cfg.train.eval_trajectories) // world)  # trajectories of the busiest rank
        n_batches = -(-busiest // batch)  # equal on every rank
        mine = iter_split(src, cfg.train.eval_trajectories, rank, world)
        first = next(mine, None)
        template = first if first is not None else next(iter_split(src, 1))  # shapes for zero-weight padding
        frames = template.data.shape[0] if src.rollout is None else min(template.data.shape[0], m.t_in + src.rollout)
        steps = -(-max(0, frames - m.t_in) // m.t_out)
        stats = torch.zeros(len(names), 2, device=device, dtype=torch.float64)  # one-step sum, rollout sum
        curves = torch.zeros(len(names), steps, device=device, dtype=torch.float64)
        weight_sum = torch.zeros(1, device=device, dtype=torch.float64)
        keep_aspect = cfg.data.resize == "keep_aspect"
        extent = fit(template.grid, m.grid, keep_aspect)  # the region of the grid this set fills
        feedback = Feedback(
            channel_roles(len(src.manifest["channels"]), src.predicted, m.channels).to(device),
            cfg.data.pad_value,
            None if extent == tuple(m.grid) else inside_region(torch.tensor(extent, device=device), tuple(m.grid)),
        )
        scaled = forward
        if m.normalize == "stats":  # the model works in the set's train-split units; scores stay in the data's
            if src.stats is None:
                raise DataError(f"{src.name}: model.normalize=stats but no train-split statistics were read")
            scaled = in_set_units(forward, SetStats.of([src.stats], m.channels).to(device), 0)
        model = _ModelForecast(scaled, batch, dtype)
        forecasts: list[Forecast] = [model, *(partial(BASELINES[n], t_out=m.t_out) for n in names[1:])]
        example = None
        pending = [first] if first is not None else []
        for _ in range(n_batches):
            chunk = pending + list(itertools.islice(mine, batch - len(pending)))
            pending = []
            weight = torch.tensor([1.0] * len(chunk) + [0.0] * (batch - len(chunk)), device=device, dtype=torch.float64)
            chunk = chunk + [template] * (batch - len(chunk))  # zero-weight padding keeps shapes equal
            grids = [
                to_common_grid(t, src, m.grid, m.channels, cfg.data.pad_value, cfg.data.score_points, keep_aspect)
                for t in chunk
            ]
            traj = torch.stack([g[0] for g in grids]).to(device)  # [B, *space, T, C]
            mask = torch.stack([g[1] for g in grids]).to(device)  # [B, *space, 1, C]
            del grids, chunk
            if src.rollout is not None:  # DPOT predicts t_test frames after the first t_in
                traj = traj[..., : m.t_in + src.rollout, :]
            for i, forecast in enumerate(forecasts):
                one, roll, curve, pred = _score(
                    forecast, traj, mask, feedback, m.t_in, m.t_out, model if i == 0 else None
                )
                stats[i, 0] += (one * weight).sum()
                stats[i, 1] += (roll * weight).sum()
                curves[i] += (curve * weight).sum(1)
                if i == 0 and example is None and rank == 0 and first is not None:
                    inside = region(extent)  # the figure shows the data's region, at its aspect
                    example = {  # [X, Y, C] fields; a 3-D set shows its mid-plane in z
                        "input": mid_plane(traj[0][inside][..., m.t_in - 1, :]),
                        "truth": mid_plane(traj[0][inside][..., m.t_in, :]),
                        "prediction": mid_plane(pred[0][inside][..., 0, :]),
                        "mask": mid_plane(mask[0][inside][..., 0, :]),
                        **({"mid_z": np.array(traj.shape[3] // 2)} if traj.dim() == 6 else {}),
                    }
            weight_sum += weight.sum()
        stats, curves, weight_sum = sum_together([stats, curves, weight_sum])
        image_load = token_load = None
        if model.image_load is not None and model.token_load is not None:
            # each expert-parallel group holds its own sum: add groups, count each once
            image_load, token_load = (
                (t / cfg.parallel.ep_size).cpu().numpy() for t in sum_together([model.image_load, model.token_load])
            )
        n = max(weight_sum.item(), 1.0)
        scores = [
            Scores(stats[i, 0].item() / n, stats[i, 1].item() / n, (curves[i] / n).cpu().numpy())
            for i in range(len(names))
        ]
        results.append(
            DatasetEval(
                src.name,
                list(src.manifest["channels"]),
                int(weight_sum.item()),
                scores[0].one_step,
                scores[0].rollout,
                scores[0].curve,
                image_load,
                token_load,
                example,
                persistence=scores[1],
                linear=scores[2] if len(scores) > 2 else None,
            )
        )
    return EvalResult(results)


def format_table(result: EvalResult) -> str:
    """The results table: model, persistence (persist.), linear extrapolation and model / persistence, one step
    and rollout; a model that does not beat persistence is named in words below it."""
    head = (
        f"{'data set':<34} {'traj':>5} | {'1-step':>7} {'persist.':>8} {'linear':>7} {'ratio':>6} | "
        f"{'rollout':>7} {'persist.':>8} {'linear':>7} {'ratio':>6}"
    )
    lines = ["L2RE (ratio = model / persistence; below 1 beats copying the last input frame)", head]
    for d in result.datasets:
        lin1 = f"{d.linear.one_step:>7.4f}" if d.linear else f"{'–':>7}"
        linr = f"{d.linear.rollout:>7.4f}" if d.linear else f"{'–':>7}"
        lines.append(
            f"{d.name:<34} {d.trajectories:>5d} | {d.one_step:>7.4f} {d.persistence.one_step:>8.4f} {lin1} "
            f"{d.ratio_one_step:>6.2f} | {d.rollout:>7.4f} {d.persistence.rollout:>8.4f} {linr} "
            f"{d.ratio_rollout:>6.2f}"
        )
    for which, words in (("one_step", "one step ahead"), ("rollout", "in rollout")):
        losing = result.losing(which)
        if losing:
            lines.append(
                f"WORSE THAN PERSISTENCE {words} on {len(losing)} of {len(result.datasets)}: " + ", ".join(losing)
            )
    diverged = [d.name for d in result.datasets if not (math.isfinite(d.one_step) and math.isfinite(d.rollout))]
    if diverged:
        lines.append("NON-FINITE predictions (nan: the rollout diverged) on: " + ", ".join(diverged))
    return "\n".join(lines)
