"""A non-finite loss never reaches the weights: the micro-step is skipped on every rank, and a run that
keeps producing them stops, saying where, instead of finishing with poisoned checkpoints."""
from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from nestor_ds.engine.stopped import RunStopped

log = logging.getLogger(__name__)


class FiniteGuard:
    def __init__(self, max_consecutive: int) -> None:
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped = 0

    def nonfinite(self, loss: torch.Tensor) -> bool:
        """Collective: True when the loss is NaN/inf on any rank (so that all ranks skip together). The step's
        one device read."""
        flag = (~torch.isfinite(loss.detach())).float().reshape(1)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def skip(self, step: int, datasets: list[str], last_checkpoint: str | None) -> None:
        """Count a skipped micro-step; stop the run after ``max_consecutive`` in a row."""
        self.consecutive += 1
        self.skipped += 1
        where = f"step {step + 1} (data sets in the batch: {', '.join(sorted(set(datasets)))})"
        if self.consecutive >= self.max_consecutive:
            raise RunStopped(
                f"non-finite loss in {self.consecutive} consecutive micro-steps, the last at {where}; nothing of "
                f"them reached the weights. Last good checkpoint: {last_checkpoint or 'none written yet'}. Lower "
                f"train.optimizer.lr or check the data (train.max_bad_steps={self.max_consecutive})")
        log.warning("non-finite loss at %s: micro-step skipped on every rank (%d in a row, %d in all)", where,
                    self.consecutive, self.skipped)

    def good(self) -> None:
        self.consecutive = 0
