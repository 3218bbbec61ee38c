"""A non-finite loss or gradient norm never reaches the weights: the step is skipped on every rank, and a run
that keeps producing them stops, saying where, instead of finishing with poisoned checkpoints."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from nestor_ds.errors import RunStopped

log = logging.getLogger(__name__)


class NonFiniteStop(RunStopped):
    """train.max_bad_steps bad steps in a row (the loop may roll back instead of stopping)."""


class FiniteGuard:
    """Counts consecutive non-finite steps, logs each skip, and stops the run past ``train.max_bad_steps``."""

    def __init__(self, max_consecutive: int) -> None:
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped = 0

    def check(self, loss: torch.Tensor, grad_bad: torch.Tensor | None = None) -> tuple[bool, bool]:
        """Collective, the step's one device read: (the loss is NaN/inf on any rank, so that all ranks skip
        backward together; the previous step's gradient norm was, ``grad_bad`` being its flag on the device)."""
        flags = torch.zeros(2, device=loss.device)
        flags[0] = (~torch.isfinite(loss.detach())).float()
        if grad_bad is not None:
            flags[1] = grad_bad
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        bad_loss, bad_grad = flags.tolist()
        return bool(bad_loss), bool(bad_grad)

    def skip(self, step: int, datasets: list[str], last_checkpoint: str | None, what: str = "loss") -> None:
        """Count a skipped (micro-)step; stop the run after ``max_consecutive`` in a row."""
        self.consecutive += 1
        self.skipped += 1
        where = f"step {step + 1} (data sets in the batch: {', '.join(sorted(set(datasets))) or 'unknown'})"
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteStop(
                f"non-finite {what} in {self.consecutive} consecutive steps, the last at {where}; nothing of "
                f"them reached the weights. Last good checkpoint: {last_checkpoint or 'none written yet'}. Lower "
                f"train.optimizer.lr or check the data (train.max_bad_steps={self.max_consecutive})"
            )
        log.warning(
            "non-finite %s at %s: skipped on every rank (%d in a row, %d in all)",
            what,
            where,
            self.consecutive,
            self.skipped,
        )

    def good(self) -> None:
        """A step without a non-finite loss or gradient norm (or a rollback to a good state)."""
        self.consecutive = 0
