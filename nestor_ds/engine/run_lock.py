"""One run per output directory: a lock file held by rank 0 for the life of the job.

A second job into the same directory would overwrite or silently resume the first one's
checkpoints and race on its MLflow store; it is refused, naming the holder. A lock left
by a dead process is taken over (same host and its pid gone, or the same Slurm job id: a
requeued job), saying so.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from nestor_ds.config import ConfigError

log = logging.getLogger(__name__)
LOCK = "run.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _me() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _stale(holder: dict[str, object]) -> str | None:
    """Why the holder is gone, or None when it may still be running."""
    me = _me()
    if holder.get("job_id") and holder.get("job_id") == me["job_id"]:
        return f"Slurm job {holder['job_id']} requeued"
    pid = holder.get("pid")
    if holder.get("host") == me["host"] and isinstance(pid, int) and not _alive(pid):
        return f"pid {holder['pid']} on {holder['host']} is gone"
    return None


class RunLock:
    """``with RunLock(out_dir):`` ... ; raises ConfigError naming the holder when the directory is in use."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOCK
        self.held = False

    def acquire(self) -> None:
        """Take the output folder, or raise naming the run that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    holder = {}
                reason = _stale(holder) if holder else "the lock file is unreadable"
                if reason is None:
                    raise ConfigError(
                        f"{self.path.parent} is in use by another run: pid {holder.get('pid')} on "
                        f"{holder.get('host')}"
                        + (f" (Slurm job {holder['job_id']})" if holder.get("job_id") else "")
                        + f" since {holder.get('started')}. Give this run another train.output_dir, or stop that "
                        f"one (a lock of a dead run on another host: delete {self.path})"
                    ) from None
                log.warning("taking over the lock of %s: %s", self.path.parent, reason)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(_me(), f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return
        raise ConfigError(f"{self.path}: another run took the lock while this one was taking over a stale one")

    def release(self) -> None:
        """Give the output folder back (only a lock this process holds)."""
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
