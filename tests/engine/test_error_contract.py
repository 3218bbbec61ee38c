"""One error contract for both entry points (``nestor-ds train`` and ``launch/train.py``), in real runs:

- a user error (bad config, missing shard, hostile checkpoint) is one line and exit 2;
- a run that stops itself (non-finite steps) is one line and exit 1, no traceback;
- anything else is a bug: exit 1 with its traceback.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PRETRAIN_SETS, REPO, env, run_args

pytestmark = pytest.mark.slow
SETS = PRETRAIN_SETS[:1]
ENTRY_POINTS = {
    "nestor-ds train": [sys.executable, "-m", "nestor_ds", "train"],
    "launch/train.py": [sys.executable, str(REPO / "launch" / "train.py")],
}
IN_PROCESS = {  # argv and the statement that starts each entry point as its command line does
    "nestor-ds train": (["nestor-ds", "train"], "runpy.run_module('nestor_ds', run_name='__main__')"),
    "launch/train.py": (
        [str(REPO / "launch" / "train.py")],
        f"runpy.run_path({str(REPO / 'launch' / 'train.py')!r}, run_name='__main__')",
    ),
}


class Payload:
    """Runs code when unpickled, as a hostile checkpoint would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def _args(shards: Path, out: Path, *extra: str) -> list[str]:
    return run_args(shards, out, "--set", "parallel.ep_size=1", "--set", "train.steps=3", *extra, sets=SETS)


def _run(entry: str, args: list[str], prelude: str | None = None) -> subprocess.CompletedProcess:
    cmd = ENTRY_POINTS[entry] + args
    if prelude is not None:  # the same entry point started inside the process, with a bug planted first
        argv, start = IN_PROCESS[entry]
        cmd = [sys.executable, "-c", f"import runpy, sys\nsys.argv = {argv + args!r}\n{prelude}\n{start}"]
    return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)


def _one_line(done: subprocess.CompletedProcess, code: int, kind: str, *words: str) -> None:
    assert done.returncode == code, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [
        line for line in done.stderr.splitlines() if f"{kind}:" in line and line.split(":")[0] in ("train", "nestor-ds")
    ]
    assert len(lines) == 1, done.stderr[-3000:]
    assert all(w in lines[0] for w in words), lines[0]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_bad_config_is_one_line_exit_2(entry: str, shards: Path, tmp_path: Path) -> None:
    done = _run(entry, _args(shards, tmp_path / "run", "--set", "model.patch_size=5"))
    _one_line(done, 2, "error", "patch_size=5")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_missing_shard_is_one_line_exit_2(entry: str, shards: Path, tmp_path: Path) -> None:
    copy = tmp_path / "shards"
    shutil.copytree(shards / SETS[0], copy / SETS[0])
    gone = sorted((copy / SETS[0] / "train").glob("*.tar"))[0]
    gone.unlink()
    done = _run(entry, _args(copy, tmp_path / "run"))
    _one_line(done, 2, "error", str(gone), "missing")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_hostile_checkpoint_is_one_line_exit_2_and_never_runs(entry: str, shards: Path, tmp_path: Path) -> None:
    ckpt, marker = tmp_path / "ckpt", tmp_path / "pwned"
    (ckpt / "step00000001").mkdir(parents=True)
    (ckpt / "latest").write_text("step00000001")
    torch.save({"module": {}, "payload": Payload(marker)}, ckpt / "step00000001" / "mp_rank_00_model_states.pt")
    done = _run(entry, ["--mode", "finetune", "--weights", str(ckpt), *_args(shards, tmp_path / "run")])
    _one_line(done, 2, "error", "mp_rank_00_model_states.pt")
    assert not marker.exists()


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_non_finite_stop_is_one_line_exit_1(entry: str, shards: Path, tmp_path: Path) -> None:
    # an absurd learning rate makes the weights, then the loss, non-finite within a few steps
    done = _run(
        entry,
        _args(
            shards,
            tmp_path / "run",
            "--set",
            "train.optimizer.lr=1e30",
            "--set",
            "train.optimizer.warmup_fraction=0.0",
            "--set",
            "train.max_bad_steps=1",
            "--set",
            "train.steps=20",
            "--set",
            "train.on_nonfinite=stop",
        ),
    )
    _one_line(done, 1, "stopped", "non-finite")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_internal_error_keeps_its_traceback_exit_1(entry: str, shards: Path, tmp_path: Path) -> None:
    bug = (
        "import nestor_ds.data.loader as loader\n"
        "def broken(cfg, split):\n    return int('not a number')  # a bug (a plain ValueError), not the user's input\n"
        "loader.open_sources = broken"
    )
    done = _run(entry, _args(shards, tmp_path / "run"), prelude=bug)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" in done.stderr and "ValueError: invalid literal for int()" in done.stderr
    assert "error:" not in done.stderr.split("Traceback")[0]  # not dressed up as the user's fault
