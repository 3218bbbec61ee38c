"""train.time_limit_s (a study's wall-time budget): the run ends at the first step boundary past it, with a
checkpoint, the final evaluation and its summary, as a finished run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import PRETRAIN_SETS, launch, run_args

pytestmark = [pytest.mark.multiproc, pytest.mark.slow]


def test_time_limit_ends_the_run_as_finished(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = launch(
        "torchrun",
        2,
        run_args(shards, out, "--set", "train.steps=100000", "--set", "train.time_limit_s=3", sets=PRETRAIN_SETS[:2]),
    )
    found = re.search(r"train.time_limit_s=3 reached at step (\d+) of 100000: the run ends here", done.stdout)
    assert found, done.stdout[-3000:]
    step = int(found.group(1))
    assert 1 <= step < 1000
    assert (out / "checkpoints" / "latest").read_text() == f"step{step:08d}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == step and "eval/ns2d_fno_1e-3/l2re_one_step" in summary
    # a stop reason beside the plan, not a rewritten plan
    assert summary["stop_reason"] == "time_limit" and summary["steps_planned"] == 100000
