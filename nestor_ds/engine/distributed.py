"""Start torch.distributed the same way under deepspeed, torchrun or a plain process."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
STALE_BUILD_LOCK_S = 600.0  # DeepSpeed's shm op builds in seconds; a lock this old outlived a killed process


def free_port() -> int:
    """A TCP port free on this host now (for a single-process rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clear_stale_build_lock(name: str = "deepspeed_shm_comm", max_age_s: float = STALE_BUILD_LOCK_S) -> Path | None:
    """Remove the JIT build lock of DeepSpeed's op ``name`` when it is older than ``max_age_s``: a process killed
    while building or loading the op leaves torch's ``lock`` file behind, and every later run on the machine then
    waits on it forever before it starts. Returns the removed path (logged), or None."""
    from torch.utils.cpp_extension import _get_build_directory

    lock = Path(_get_build_directory(name, verbose=False)) / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    if age < max_age_s:
        return None  # another process may be building it now
    lock.unlink(missing_ok=True)
    log.warning("removed %s, a build lock %.0f s old left by a killed process (it would block this run)", lock, age)
    return lock


def init_distributed(backend: str | None = None, timeout_s: float | None = None) -> None:
    """A plain process gets RANK=0/WORLD_SIZE=1 so DeepSpeed does not go looking for MPI.

    ``timeout_s`` bounds every collective of every group: groups made later without a timeout (DeepSpeed's
    expert and data-parallel groups) take torch's default, which is set to it here."""
    from datetime import timedelta

    import deepspeed
    import torch.distributed.distributed_c10d as c10d

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    timeout = None
    if timeout_s is not None:
        timeout = timedelta(seconds=timeout_s)
        c10d.default_pg_timeout = c10d.default_pg_nccl_timeout = timeout
    kwargs = {} if timeout is None else {"timeout": timeout}
    clear_stale_build_lock()
    deepspeed.init_distributed(dist_backend=backend, **kwargs)  # None: the accelerator's own (nccl, gloo on CPU)


class Heartbeat:
    """Each rank keeps ``<dir>/rank<N>`` fresh (step, pid) from a background thread, which runs on while the
    rank waits in a collective (the wait releases the GIL) and stops with the process (killed, stopped,
    crashed). When a collective times out, the ranks whose file went stale are the ones that did not answer."""

    INTERVAL_S = 2.0

    def __init__(self, folder: Path, rank: int, world: int) -> None:
        self.folder, self.rank, self.world, self.step = folder, rank, world, 0
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> "Heartbeat":
        """Start the background thread that keeps this rank's file fresh."""
        import threading

        def loop() -> None:
            while True:
                self._write()
                time.sleep(self.INTERVAL_S)

        threading.Thread(target=loop, name="nestor-heartbeat", daemon=True).start()
        return self

    def _write(self) -> None:
        path = self.folder / f"rank{self.rank}"
        tmp = path.with_name(path.name + ".tmp")
        try:  # renamed into place: a reader never sees the file empty or half written
            tmp.write_text(f"{self.step} {os.getpid()}")
            os.replace(tmp, path)
        except OSError:
            pass  # a full or vanished disk shows elsewhere; the heartbeat only helps name a hung rank

    def beat(self, step: int) -> None:
        """Record the last step this rank finished (written by the thread)."""
        self.step = step

    def laggards(self) -> str:
        """The ranks whose heartbeat went stale, in words, for a timeout's message."""
        now, silent = time.time(), []
        for r in range(self.world):
            f = self.folder / f"rank{r}"
            if not f.is_file():
                silent.append(f"rank {r} (never started)")
            elif now - f.stat().st_mtime > 4 * self.INTERVAL_S:
                silent.append(
                    f"rank {r} (silent for {now - f.stat().st_mtime:.0f} s, last finished step "
                    f"{f.read_text().split()[0]})"
                )
        return ", ".join(silent) + " did not answer" if silent else "every rank is alive (a collective mismatch?)"


def shutdown() -> None:
    """Leave the process group cleanly (all ranks meet at a barrier first)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_world(shared: bool = True) -> tuple[int, int]:
    """(rank, world size) of the default group when distributed and ``shared``; else (0, 1)."""
    import torch.distributed as dist

    if shared and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(items: list[Any], shared: bool = True) -> list[Any]:
    """Every rank's items, concatenated (collective when distributed and ``shared``)."""
    rank, world = rank_world(shared)
    if world == 1:
        return items
    import torch.distributed as dist

    parts: list[list[Any] | None] = [None] * world
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in (part or [])]
