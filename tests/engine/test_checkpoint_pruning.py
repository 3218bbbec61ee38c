"""Pruning old checkpoints touches only the run's own tags, in a reused directory too (real runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PRETRAIN_SETS, launch, run_args

pytestmark = [pytest.mark.slow]


def test_pruning_keeps_other_runs_and_user_folders(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = [
        "--set",
        "parallel.ep_size=1",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "train.keep_checkpoints=2",
        "--set",
        "train.eval_every=100",
    ]
    launch("plain", 1, run_args(shards, out, *common, "--set", "train.steps=4", sets=PRETRAIN_SETS[:1]))
    ckpt = out / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir() if p.is_dir()) == ["step00000003", "step00000004"]
    (ckpt / "step_notes").mkdir()  # a user's folder whose name starts with "step"
    (ckpt / "step_notes" / "todo.txt").write_text("keep me")
    # a second, shorter run into the same directory, not resuming: its steps are below the first run's
    launch(
        "plain", 1, [*run_args(shards, out, *common, "--set", "train.steps=2", sets=PRETRAIN_SETS[:1]), "--no-resume"]
    )
    assert (ckpt / "latest").read_text() == "step00000002"
    assert sorted(p.name for p in ckpt.iterdir() if p.is_dir()) == [
        "step00000001",
        "step00000002",
        "step00000003",
        "step00000004",
        "step_notes",
    ]  # the first run's kept
    assert (ckpt / "step_notes" / "todo.txt").read_text() == "keep me"
    # and a rerun resumes from what latest names
    rerun = launch("plain", 1, run_args(shards, out, *common, "--set", "train.steps=2", sets=PRETRAIN_SETS[:1]))
    assert "checkpoints/step00000002 at step 2" in rerun.stdout + rerun.stderr
