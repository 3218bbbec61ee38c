"""Several tensors summed over ranks in one all-reduce, each handed back in its own shape (no hand offsets)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def sum_together(tensors: list[torch.Tensor], group: dist.ProcessGroup | None = None) -> list[torch.Tensor]:
    """``tensors`` summed over the ranks of ``group`` (all ranks: None) with one collective; unchanged when
    not distributed. They share the device; the results take the dtype torch.cat promotes them to."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return list(tensors)
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, group=group)
    return [chunk.view_as(t) for chunk, t in zip(flat.split([t.numel() for t in tensors]), tensors)]
