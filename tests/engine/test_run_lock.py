"""Two runs into one output directory: the second is refused naming the first; a dead run's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PRETRAIN_SETS, REPO, env, launch, run_args

pytestmark = [pytest.mark.slow]


def test_second_run_into_a_busy_directory_is_refused(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = run_args(
        shards,
        out,
        "--set",
        "parallel.ep_size=1",
        "--set",
        "train.eval_every=1000",
        "--set",
        "train.checkpoint_every=1000",
        sets=PRETRAIN_SETS[:1],
    )
    first = subprocess.Popen(
        [sys.executable, str(REPO / "launch" / "train.py"), *args, "--set", "train.steps=100000"],
        cwd=REPO,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while not (out / "mlflow.db").exists():  # the first run is past its lock and writing
            assert first.poll() is None and time.time() < deadline, "first run did not start"
            time.sleep(0.2)
        second = subprocess.run(
            [sys.executable, str(REPO / "launch" / "train.py"), *args, "--set", "train.steps=2"],
            cwd=REPO,
            env=env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2
        assert f"is in use by another run: pid {first.pid} on" in second.stderr, second.stderr[-2000:]
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first run goes on
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # dies without releasing its lock, as a node failure would
        first.wait()
    assert (out / "run.lock").is_file()
    third = launch("plain", 1, [*args, "--set", "train.steps=2", "--no-resume"])
    assert f"taking over the lock of {out}: pid {first.pid}" in third.stdout + third.stderr
    assert not (out / "run.lock").exists()  # released at the end
