"""Training metrics accumulated per log interval and summed over ranks in one all-reduce."""

from __future__ import annotations

import dataclasses
import resource
from dataclasses import dataclass

import torch
import torch.distributed as dist

from nestor_ds.model.collectives import sum_together
from nestor_ds.model.output import ModelOutput


@dataclass
class IntervalSums:
    """Sums over one log interval on one rank (float64 on the device; summed over ranks by :func:`reduce`)."""

    loss: torch.Tensor  # ()
    aux_image: torch.Tensor  # ()
    aux_token: torch.Tensor  # ()
    micro_steps: torch.Tensor  # () micro-steps that counted (a non-finite one is skipped)
    samples: torch.Tensor  # ()
    l2re: torch.Tensor  # [sets] per-sample L2RE summed per data set
    l2re_count: torch.Tensor  # [sets]
    dropped: torch.Tensor  # () image-level routes dropped by capacity, per EP group
    routes: torch.Tensor  # () image-level routes, per EP group
    skipped: torch.Tensor  # () bad samples the loader skipped
    image_load: torch.Tensor | None = None  # [L, E] routes per expert (None: a dense model)
    token_load: torch.Tensor | None = None  # [L, E, E'] tokens per Sub-MoE expert

    @classmethod
    def zeros(cls, sets: int, device: torch.device) -> IntervalSums:
        """An empty interval."""
        scalar = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        vector = lambda: torch.zeros(sets, dtype=torch.float64, device=device)  # noqa: E731
        return cls(scalar(), scalar(), scalar(), scalar(), scalar(), vector(), vector(), scalar(), scalar(), scalar())

    def reduce(self) -> IntervalSums:
        """The sums over all ranks, in one collective (every rank calls it at the same steps)."""
        fields = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]
        summed = sum_together([getattr(self, name) for name in fields])
        return dataclasses.replace(self, **dict(zip(fields, summed)))


class IntervalMetrics:
    """Loss, per-set L2RE, aux losses, expert load and drops of the steps since the last log line."""

    def __init__(self, datasets: list[str], ep_size: int, device: torch.device, drop_share: bool = False) -> None:
        self.datasets, self.ep_size, self.device = datasets, ep_size, device
        self.drop_share = drop_share  # log the share of image-level routes dropped by capacity
        self.reset()

    def reset(self) -> None:
        """Start a new interval."""
        self.sums = IntervalSums.zeros(len(self.datasets), self.device)

    def add(
        self, loss: torch.Tensor, per_sample: torch.Tensor, dataset_id: torch.Tensor, out: ModelOutput, skipped: int
    ) -> None:
        """One micro-step's contribution (no host read)."""
        s, one = self.sums, torch.ones((), dtype=torch.float64, device=self.device)
        s.loss += loss.detach().double()
        s.aux_image += out.aux_image.detach().double()
        s.aux_token += out.aux_token.detach().double()
        s.micro_steps += one
        s.samples += per_sample.numel()
        ids = dataset_id.to(self.device)
        s.l2re.index_add_(0, ids, per_sample.detach().double())
        s.l2re_count.index_add_(0, ids, torch.ones_like(per_sample, dtype=torch.float64))
        if out.image_load is not None and out.token_load is not None:
            il, tl = out.image_load.double(), out.token_load.double()
            # every rank of an EP group holds the group's load: divided here so that the sum over ranks counts
            # each group once
            s.image_load = il / self.ep_size if s.image_load is None else s.image_load + il / self.ep_size
            s.token_load = tl / self.ep_size if s.token_load is None else s.token_load + tl / self.ep_size
            s.routes += il.sum() / self.ep_size
            if out.dropped is not None:
                s.dropped += out.dropped.double().sum() / self.ep_size
        s.skipped.fill_(float(skipped))  # the loader's running count: the latest is the interval's

    def reduce(self) -> dict[str, float]:
        """The interval's metrics over all ranks; collective: every rank calls it at the same steps."""
        world = dist.get_world_size() if dist.is_initialized() else 1
        s = self.sums.reduce()
        micro = s.micro_steps.item() / world or float("nan")  # nan: every micro-step of the interval was skipped
        out = {
            "train/loss": s.loss.item() / world / micro,
            "train/aux_image": s.aux_image.item() / world / micro,
            "train/aux_token": s.aux_token.item() / world / micro,
            "train/samples": s.samples.item(),
            "data/skipped_samples": s.skipped.item(),
        }
        for name, total, count in zip(self.datasets, s.l2re.tolist(), s.l2re_count.tolist()):
            if count:
                out[f"train/{name}/l2re"] = total / count
        if s.image_load is not None and s.token_load is not None:
            il, tl = s.image_load.sum(0), s.token_load.sum((0, 1))
            for e, share in enumerate((il / il.sum().clamp_min(1)).tolist()):
                out[f"load/image/expert{e}"] = share
            for e, share in enumerate((tl / tl.sum().clamp_min(1)).tolist()):
                out[f"load/token/expert{e}"] = share
            if self.drop_share:
                dropped, routes = s.dropped.item(), s.routes.item()
                out["moe/dropped_share"] = dropped / routes if routes else 0.0
        return out


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory of this process: the CUDA allocator's peak on a GPU, the resident set's peak on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
