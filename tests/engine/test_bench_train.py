"""The benchmark scripts run end to end and report what the speed issue asks for (figures are not asserted:
speed is measured by the scripts, not by tests)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, env

pytestmark = [pytest.mark.slow, pytest.mark.multiproc]


def _rows(stdout: str) -> dict[str, list[str]]:
    """Table rows by model name (the first 18 characters): samples/s, tokens/s, TFLOP/s, MFU, peak MiB, syncs, ..."""
    return {line[:18].strip(): line[18:].split() for line in stdout.splitlines() if line.startswith(("nestor", "dpot"))}


def test_bench_model_reports_syncs_ops_and_the_loop_ratio() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "scripts/bench_model.py",
            "--resolution",
            "16",
            "--batch",
            "4",
            "--steps",
            "1",
            "--warmup",
            "0",
        ],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = _rows(out.stdout)
    assert rows.keys() == {"nestor tiny", "nestor tiny loop", "dpot tiny"}
    assert rows["nestor tiny"][5] == "0" and int(rows["nestor tiny loop"][5]) > 0  # host syncs per step
    assert float(rows["nestor tiny"][-1].rstrip("x")) > 2  # kernel-running ops (3x at batch 8: test_host_sync)


def test_bench_train_runs_real_training_jobs() -> None:
    out = subprocess.run(
        [sys.executable, "scripts/bench_train.py", "--resolution", "16", "--batch", "2", "--steps", "2", "--no-loop"],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = _rows(out.stdout)
    assert rows.keys() == {"nestor tiny", "dpot tiny"}  # the loop reference's syncs: the bench_model test above
    assert rows["nestor tiny"][5] == "1" and rows["dpot tiny"][5] == "1"  # a whole step: the finite-loss guard
    assert all(float(r[0]) > 0 for r in rows.values())  # samples/s
