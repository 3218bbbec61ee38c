"""Training metrics accumulated per log interval and summed over ranks in one all-reduce."""
from __future__ import annotations

import resource

import torch
import torch.distributed as dist

from nestor_ds.model.output import ModelOutput


class IntervalMetrics:
    def __init__(self, datasets: list[str], ep_size: int, device: torch.device, drop_share: bool = False) -> None:
        self.datasets, self.ep_size, self.device = datasets, ep_size, device
        self.drop_share = drop_share  # log the share of image-level routes dropped by capacity
        self.reset()

    def reset(self) -> None:
        n = len(self.datasets)
        self.scalars = torch.zeros(5, dtype=torch.float64, device=self.device)  # loss, aux_i, aux_t, micro, samples
        self.per_set = torch.zeros(2, n, dtype=torch.float64, device=self.device)  # l2re sum, count
        self.image_load: torch.Tensor | None = None
        self.token_load: torch.Tensor | None = None
        self.skipped = 0
        self.routes = torch.zeros(2, dtype=torch.float64, device=self.device)  # dropped, all (per EP group)

    def add(self, loss: torch.Tensor, per_sample: torch.Tensor, dataset_id: torch.Tensor, out: ModelOutput,
            skipped: int) -> None:
        self.scalars += torch.stack([loss.detach().double(), out.aux_image.detach().double(),
                                     out.aux_token.detach().double(), torch.ones((), dtype=torch.float64,
                                     device=self.device), torch.tensor(float(per_sample.numel()), dtype=torch.float64,
                                     device=self.device)])
        ids = dataset_id.to(self.device)
        self.per_set[0].index_add_(0, ids, per_sample.detach().double())
        self.per_set[1].index_add_(0, ids, torch.ones_like(per_sample, dtype=torch.float64))
        if out.image_load is not None:
            il, tl = out.image_load.double(), out.token_load.double()
            self.image_load = il if self.image_load is None else self.image_load + il
            self.token_load = tl if self.token_load is None else self.token_load + tl
            self.routes += torch.stack([out.dropped.double().sum(), il.sum()])
        self.skipped = skipped

    def reduce(self) -> dict[str, float]:
        """Collective: every rank calls it at the same steps."""
        parts = [self.scalars, self.per_set.reshape(-1)]
        if self.image_load is not None:
            parts += [self.image_load.reshape(-1) / self.ep_size, self.token_load.reshape(-1) / self.ep_size]
        flat = torch.cat(parts + [self.routes / self.ep_size,
                                  torch.tensor([float(self.skipped)], dtype=torch.float64, device=self.device)])
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flat)
        world = dist.get_world_size() if dist.is_initialized() else 1
        micro = flat[3].item() / world or float("nan")  # nan: every micro-step of the interval was skipped
        out = {"train/loss": flat[0].item() / world / micro, "train/aux_image": flat[1].item() / world / micro,
               "train/aux_token": flat[2].item() / world / micro, "train/samples": flat[4].item(),
               "data/skipped_samples": flat[-1].item()}
        n = len(self.datasets)
        sums, counts = flat[5:5 + n], flat[5 + n:5 + 2 * n]
        for name, s, c in zip(self.datasets, sums.tolist(), counts.tolist()):
            if c:
                out[f"train/{name}/l2re"] = s / c
        if self.image_load is not None:
            off = 5 + 2 * n
            il = flat[off:off + self.image_load.numel()].view_as(self.image_load).sum(0)
            tl = flat[off + il.numel() * self.image_load.shape[0]:-3].view_as(self.token_load).sum((0, 1))
            for e, share in enumerate((il / il.sum().clamp_min(1)).tolist()):
                out[f"load/image/expert{e}"] = share
            for e, share in enumerate((tl / tl.sum().clamp_min(1)).tolist()):
                out[f"load/token/expert{e}"] = share
            if self.drop_share:
                dropped, routes = flat[-3].item(), flat[-2].item()
                out["moe/dropped_share"] = dropped / routes if routes else 0.0
        return out


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
