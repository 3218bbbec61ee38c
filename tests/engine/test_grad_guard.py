"""The finite guard on gradient norms, in real 2-rank runs: a NaN gradient on one rank (finite loss) skips the
update on both, at ZeRO 0 (fused Adam's found_inf) and ZeRO 1 (DeepSpeed's overflow check)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import PRETRAIN_SETS, REPO, env, run_args
from mlflow import MlflowClient

pytestmark = [pytest.mark.multiproc, pytest.mark.slow]
HERE = Path(__file__).parent


def _run(shards: Path, out: Path, bad: str, ds_config: Path, *extra: str) -> subprocess.CompletedProcess:
    from multiproc import torchrun_cmd

    args = run_args(
        shards, out, "--set", "train.steps=5", "--set", "train.max_bad_steps=2", *extra, sets=PRETRAIN_SETS[:2]
    )
    args[args.index("--ds_config") + 1] = str(ds_config)
    cmd = torchrun_cmd(HERE / "nan_grad_worker.py", 2, *args)
    return subprocess.run(
        cmd, cwd=REPO, env={**env(), "NAN_GRAD_STEPS": bad}, capture_output=True, text=True, timeout=600
    )


def _ds(tmp_path: Path, stage: int) -> Path:
    ds = json.loads((REPO / "ds_configs" / "cpu_fp32.json").read_text())
    ds["zero_optimization"] = {"stage": stage}
    path = tmp_path / f"zero{stage}.json"
    path.write_text(json.dumps(ds))
    return path


def test_one_nan_gradient_is_skipped_and_the_run_finishes(shards: Path, tmp_path: Path) -> None:
    from nestor_ds.model.export import read_checkpoint_state

    out = tmp_path / "run"
    done = _run(shards, out, "2", _ds(tmp_path, 0))
    assert done.returncode == 0, done.stderr[-4000:]
    assert "non-finite gradient norm at step 3" in done.stdout + done.stderr
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("nestor-tiny-cpu").experiment_id])
    skipped = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/skipped_nonfinite")}
    assert skipped == {1: 0, 2: 0, 3: 0, 4: 1, 5: 1}  # step 3's verdict is read with step 4's loss
    import torch

    state = read_checkpoint_state(out / "checkpoints")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("stage", [0, 1])
def test_nan_gradients_in_a_row_stop_the_run(shards: Path, tmp_path: Path, stage: int) -> None:
    out = tmp_path / "run"
    done = _run(shards, out, "1,2", _ds(tmp_path, stage), "--set", "train.checkpoint_every=1")
    assert done.returncode != 0
    assert "non-finite gradient norm in 2 consecutive steps, the last at step 3" in done.stderr, done.stderr[-4000:]
    assert "Last good checkpoint: step0000000" in done.stderr
    import torch

    from nestor_ds.model.export import read_checkpoint_state

    for tag in sorted(p.name for p in (out / "checkpoints").glob("step*")):  # skipped updates: nothing poisoned
        state = read_checkpoint_state(out / "checkpoints", tag)
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), tag
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("nestor-tiny-cpu").experiment_id])
    assert run.info.status == "FAILED"


def test_rollback_restores_the_last_checkpoint_with_a_lower_lr(shards: Path, tmp_path: Path) -> None:
    """NaN gradients in steps 4 and 5 with train.on_nonfinite=rollback: the run goes back to its step-4
    checkpoint (written before the verdict on step 4, whose update was skipped: its weights are good), halves
    the lr, runs steps 5.. again and finishes."""
    out = tmp_path / "run"
    done = _run(
        shards,
        out,
        "3,4",
        _ds(tmp_path, 0),
        "--set",
        "train.steps=8",
        "--set",
        "train.checkpoint_every=2",
        "--set",
        "train.on_nonfinite=rollback",
        "--set",
        "train.rollback_lr_factor=0.5",
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "rollback 1/2: non-finite gradient norm in 2 consecutive steps, the last at step 5" in done.stdout
    assert "Back to step00000004 (step 4), lr x0.5" in done.stdout
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("nestor-tiny-cpu").experiment_id])
    assert run.info.status == "FINISHED" and "rollback_1" in run.data.params
    lr: dict[int, list[float]] = {}
    for m in client.get_metric_history(run.info.run_id, "train/lr"):
        lr.setdefault(m.step, []).append(m.value)
    assert len(lr[5]) == 2 and lr[5][1] == pytest.approx(lr[5][0] / 2, rel=1e-6)  # step 5 again, half the lr
    assert len(lr[8]) == 1
    assert (out / "checkpoints" / "latest").read_text() == "step00000008"
