"""studies/quick.yaml end to end on CPU, as a user runs it: killed mid-way, run again, every arm reported;
finished runs are not run twice and killed ones resume from their checkpoints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

pytestmark = [pytest.mark.multiproc, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
ARMS = [a["name"] for a in yaml.safe_load((REPO / "studies" / "quick.yaml").read_text())["arms"]]


def _study(*args: str) -> list[str]:
    return [sys.executable, "-m", "nestor_ds", "study", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}


def _summaries(out: Path) -> dict[str, float]:
    return {str(p.parent.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("*/seed*/summary.json")}


def test_quick_study_killed_then_finished_reports_every_arm(quick_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "quick"
    run = _study(
        "run", "studies/quick.yaml", "--out", str(out), "--set", f"data.root={quick_shards}", "--parallel", "2"
    )
    proc = subprocess.Popen(
        run, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 600
    try:  # kill once two runs are finished and another has a checkpoint but no summary
        while not (
            len(_summaries(out)) >= 2
            and any(
                (p.parent.parent / "checkpoints" / "latest").is_file()
                and not (p.parent.parent / "summary.json").exists()
                for p in out.glob("*/seed*/checkpoints/latest")
            )
        ):
            assert proc.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "no progress in time"
            time.sleep(0.1)
    finally:
        from multiproc import kill_tree

        kill_tree(proc)
    before = _summaries(out)
    assert 2 <= len(before) < 2 * len(ARMS)

    done = subprocess.run(run, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    log = done.stdout + done.stderr
    for key in before:
        assert f"{key}: finished before, skipped" in log
    after = _summaries(out)
    assert {k: after[k] for k in before} == before  # not run again
    assert len(after) == 2 * len(ARMS)
    resumed = [
        p
        for p in out.glob("*/seed*/run.log")
        if re.search(r"resumed from \S+step0000000\d at step \d", p.read_text(errors="replace"))
    ]
    assert resumed, "no killed run resumed from its checkpoint"

    report = (out / "report.md").read_text()
    assert (out / "learning_curves.png").stat().st_size > 0
    header = next(line for line in report.splitlines() if line.startswith("| data set | nestor"))
    assert header == "| data set | " + " | ".join(ARMS) + " | persistence | linear extrapolation |"
    assert "Incomplete" not in report
    rows = [line for line in report.splitlines() if line.startswith("| ns2d_fno_1e-3 |")]
    assert len(rows) == 3  # one-step, rollout, paired difference
    cells = rows[0].split("|")[2:-1]
    assert all(re.search(r"\d\.\d+ ± \d.* \(\d\.\d\d×\)", cell) for cell in cells[: len(ARMS)])  # mean ± std (ratio)
    assert all(re.fullmatch(r" \d\.\d+ ", cell) for cell in cells[len(ARMS) :])  # persistence, linear
    assert re.search(r"\| \*\*beats persistence on\*\* \|( \d of 2 \|){%d}" % len(ARMS), report)
    assert re.search(r"\| \*\*best on\*\* \|( \d of 2 \|){%d}" % len(ARMS), report)
    assert "## Compute per arm" in report and "| nestor | 0.38 M |" in report

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("study-quick")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED"
    finished = sorted(r.info.run_name for r in children if r.info.status == "FINISHED")
    assert finished == sorted(f"{a}/seed{s}" for a in ARMS for s in (0, 1))
    # an attempt killed before its first checkpoint left a run of its own: marked KILLED, not left RUNNING
    assert all(r.info.status == "KILLED" for r in children if r.info.status != "FINISHED")
