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
    """Catches SIGUSR1 (Slurm's time-limit warning) and SIGTERM so that the loop can checkpoint and stop
    at a step boundary, all ranks together."""

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGUSR1, signal.SIGTERM)) -> None:
        self.received: int | None = None
        for sig in signals:
            signal.signal(sig, self._handle)

        self.wants_requeue = False
        self.out_of_time = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def agreed(self, device: torch.device, out_of_time: bool = False) -> bool:
        """Collective: True on every rank once any rank got a signal.

        Sets ``wants_requeue`` when any rank got the time-limit warning (SIGUSR1); SIGTERM
        (scancel, node drain) only checkpoints and stops, or a cancelled job would come back.
        ``out_of_time`` (this rank passed train.time_limit_s) rides on the same reduction: when any rank
        says so, ``out_of_time`` is set on all, and the run ends as finished rather than preempted.
        """
        codes: dict[int | None, float] = {None: 0.0, signal.SIGTERM: 1.0, signal.SIGUSR1: 2.0}
        code = codes.get(self.received, 1.0)
        flag = torch.tensor([code, float(out_of_time)], device=device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        signal_code, late = flag.tolist()
        self.wants_requeue = signal_code == 2.0
        self.out_of_time = late > 0
        return signal_code > 0


def requeue_job() -> str:
    """Ask Slurm to requeue this job (rank 0 only); returns what happened, for the log line."""
    job = os.environ.get("SLURM_JOB_ID")
    scontrol = shutil.which("scontrol")
    if not job or not scontrol:
        return "not under Slurm, no requeue"
    out = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True)
    if out.returncode != 0:
        return f"scontrol requeue {job} failed: {out.stderr.strip()}"
    return "requeue requested"
