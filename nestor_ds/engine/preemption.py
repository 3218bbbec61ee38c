"""Stop cleanly when the scheduler warns: every rank agrees at a step boundary, checkpoints, requeues.

Slurm sends SIGUSR1 (``#SBATCH --signal=USR1@N``) to the tasks before the time
limit; SIGTERM comes on cancellation or node drain. The handler only sets a
flag: the decision is taken collectively so that all ranks stop at the same step.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from types import FrameType

import torch
import torch.distributed as dist

log = logging.getLogger("nestor_ds")


class Preemption:
    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGUSR1, signal.SIGTERM)) -> None:
        self.received: int | None = None
        for sig in signals:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def agreed(self, device: torch.device) -> bool:
        """Collective: True on every rank once any rank got the signal."""
        flag = torch.tensor([1.0 if self.received is not None else 0.0], device=device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def requeue_job() -> bool:
    """Ask Slurm to requeue this job (rank 0 only); False when not under Slurm."""
    job = os.environ.get("SLURM_JOB_ID")
    scontrol = shutil.which("scontrol")
    if not job or not scontrol:
        return False
    out = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True)
    if out.returncode != 0:
        log.warning("scontrol requeue %s failed: %s", job, out.stderr.strip())
        return False
    return True
