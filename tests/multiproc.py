"""Start real multi-rank jobs (torchrun, gloo on CPU) from tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_env() -> dict[str, str]:
    """This environment for a CPU rank: DeepSpeed on CPU, one thread per process, this checkout importable."""
    return dict(
        os.environ,
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )


def torchrun_cmd(script: Path | str, nproc: int, *args: str) -> list[str]:
    """``python -m torch.distributed.run`` of ``script`` on ``nproc`` local ranks, on a free port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(script),
        *args,
    ]


def torchrun(script: Path, nproc: int, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = torchrun_cmd(script, nproc, *args)
    proc = subprocess.run(cmd, cwd=REPO, env=cpu_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and everything below it, as a lost machine would (torchrun's workers live in
    sessions of their own, so killing the process group is not enough)."""
    import signal

    import psutil

    tree = psutil.Process(proc.pid)
    children = tree.children(recursive=True)
    for p in [tree, *children]:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    psutil.wait_procs(children, timeout=10)
