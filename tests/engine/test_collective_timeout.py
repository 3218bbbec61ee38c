"""A hung rank (SIGSTOP) stops the run within parallel.collective_timeout_s, naming the rank."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PRETRAIN_SETS, REPO, env, run_args


def test_a_timeout_is_told_by_type_and_timing_not_wording(tmp_path: Path) -> None:
    """gloo's timeout is a plain RuntimeError raised after the wait: one that says "timed out" at once is not one,
    and neither is another type that waited as long."""
    import torch.distributed as dist

    from nestor_ds.config import parse_config
    from nestor_ds.engine.context import Progress
    from nestor_ds.engine.trainer import _explained
    from nestor_ds.errors import RunStopped

    cfg = parse_config(
        {
            "data": {"datasets": [{"name": "ns2d_fno_1e-3"}]},
            "train": {"steps": 1, "output_dir": str(tmp_path)},
            "parallel": {"collective_timeout_s": 5},
        }
    )
    fresh, stalled = Progress(), Progress()
    stalled.at -= 6  # the run last moved 6 s ago, past the 5 s timeout
    worded = RuntimeError("Timed out waiting 5000ms for recv")
    assert _explained(worded, cfg, fresh) is worded
    assert isinstance(_explained(worded, cfg, stalled), RunStopped)
    assert isinstance(_explained(dist.DistBackendError("watchdog"), cfg, stalled), RunStopped)
    bug = KeyError("step")
    assert _explained(bug, cfg, stalled) is bug
    stopped = _explained(RuntimeError("Application timeout caused pair closure"), cfg, stalled)
    assert "a collective timed out after 5 s (parallel.collective_timeout_s)" in str(stopped)


@pytest.mark.slow
@pytest.mark.multiproc
def test_hung_rank_ends_the_run_within_the_timeout_naming_it(shards: Path, tmp_path: Path) -> None:
    from multiproc import torchrun_cmd

    out = tmp_path / "run"
    args = run_args(
        shards,
        out,
        "--set",
        "train.steps=100000",
        "--set",
        "parallel.collective_timeout_s=15",
        "--set",
        "train.eval_every=100000",
        "--set",
        "train.checkpoint_every=2",
        sets=PRETRAIN_SETS[:2],
    )
    proc = subprocess.Popen(
        torchrun_cmd(REPO / "launch" / "train.py", 2, *args),
        cwd=REPO,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    beat = out / "heartbeat" / "rank1"
    pid = None
    try:
        deadline = time.time() + 300
        while not (beat.is_file() and int(beat.read_text().split()[0]) >= 3):  # rank 1 finished step 3
            assert proc.poll() is None and time.time() < deadline, "the run did not get going"
            time.sleep(0.2)
        pid = int(beat.read_text().split()[1])
        os.kill(pid, signal.SIGSTOP)  # rank 1 hangs: alive, silent
        stopped = time.time()
        _, stderr = proc.communicate(timeout=240)
        waited = time.time() - stopped
    finally:
        if pid is not None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert waited < 15 + 90, waited  # the timeout, plus the launcher tearing the job down
    assert "a collective timed out after 15 s (parallel.collective_timeout_s): rank 1 (silent for" in stderr, stderr[
        -3000:
    ]
    assert "rank 0 (" not in stderr.split("collective timed out")[-1].split("\n")[0]  # only the hung one named
    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert (out / "checkpoints" / latest).is_dir()  # the last complete checkpoint is intact
