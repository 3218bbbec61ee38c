"""Published models in real runs: an imported DPOT fine-tunes through deepspeed; MoE-POT's temperature
anneals and the drop share is logged, in a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import PRETRAIN_SETS, REPO, launch, run_args
from mlflow import MlflowClient

pytestmark = [pytest.mark.multiproc, pytest.mark.slow]
FIXTURES = REPO / "tests" / "fixtures" / "reference"


def _history(out: Path) -> list[dict]:
    return json.loads((out / "eval" / "history.json").read_text())


def test_imported_dpot_finetunes_through_deepspeed(shards: Path, tmp_path: Path) -> None:
    from nestor_ds.model.published import import_checkpoint

    folder = tmp_path / "dpot_small"
    import_checkpoint("dpot", FIXTURES / "dpot_small" / "model.pth", folder)
    out = tmp_path / "run"
    steps = 20
    launch(
        "deepspeed",
        2,
        [
            "--config",
            str(folder / "config.yaml"),
            "--ds_config",
            "ds_configs/cpu_fp32.json",
            "--mode",
            "finetune",
            "--weights",
            str(folder),
            "--set",
            f"data.root={shards}",
            "--set",
            "data.datasets=[{name: ns2d_fno_1e-3}]",
            "--set",
            f"train.output_dir={out}",
            "--set",
            f"train.steps={steps}",
            "--set",
            "train.log_every=1",
            "--set",
            "train.micro_batch_per_rank=4",
            "--set",
            "train.eval_every=100",
        ],
    )
    losses = [h["train/loss"] for h in _history(out)]
    assert len(losses) == steps
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    table = json.loads((out / "eval" / "eval_table.json").read_text())
    assert table["datasets"][0]["dataset"] == "ns2d_fno_1e-3"


def test_moepot_run_logs_temperature_and_drop_share(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "moepot"
    steps = 6
    launch(
        "torchrun",
        2,
        run_args(
            shards,
            out,
            "--set",
            f"train.steps={steps}",
            "--set",
            "train.eval_every=100",
            "--set",
            "train.eval_trajectories=1",
            "--set",
            "model.variant=moepot",
            "--set",
            "model.moe.shared_experts=2",
            "--set",
            "model.moe.temperature_schedule=exponential",
            "--set",
            "model.moe.temperature_start=2.0",
            "--set",
            "model.moe.temperature_end=0.5",
            "--set",
            "model.moe.temperature_decay=0.9",
            "--set",
            "model.moe.drop_tokens=true",
            "--set",
            "model.moe.capacity_factor=0.5",
            "--set",
            "tracking.experiment=moepot-run",
            sets=PRETRAIN_SETS[:2],
        ),
    )
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("moepot-run").experiment_id])
    temps = [
        m.value for m in sorted(client.get_metric_history(run.info.run_id, "moe/temperature"), key=lambda m: m.step)
    ]
    # one forward per step: the temperature logged after step s is the one its forward used, 2 * 0.9^(s-1)
    assert temps == pytest.approx([2.0 * 0.9**s for s in range(steps)])
    dropped = [m.value for m in client.get_metric_history(run.info.run_id, "moe/dropped_share")]
    assert len(dropped) == steps and all(0 < d < 1 for d in dropped)
    assert run.data.metrics["train/aux_image"] > 0  # MoE-POT's importance-balance loss


def test_dropless_run_logs_no_drop_share(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "dropless"
    launch(
        "torchrun",
        2,
        run_args(
            shards,
            out,
            "--set",
            "train.steps=2",
            "--set",
            "train.eval_every=100",
            "--set",
            "train.eval_trajectories=1",
            sets=PRETRAIN_SETS[:1],
        ),
    )
    (last,) = _history(out)[-1:]
    assert "moe/dropped_share" not in last and last["moe/temperature"] == 1.0


def test_imported_moepot_finetunes_with_frozen_routers_at_ep2(shards: Path, tmp_path: Path) -> None:
    """MoE-POT's fine-tuning: gate and feature extractor frozen (BatchNorm on running statistics),
    temperature fixed at its final 0.5, experts sharded over 2 ranks and trained."""
    from safetensors.torch import load_file

    from nestor_ds.model.export import read_checkpoint_state
    from nestor_ds.model.published import import_checkpoint

    folder = tmp_path / "moepot_small"
    import_checkpoint("moepot", FIXTURES / "moepot_small" / "model.pth", folder)
    out = tmp_path / "run"
    launch(
        "torchrun",
        2,
        [
            "--config",
            str(folder / "config.yaml"),
            "--ds_config",
            "ds_configs/cpu_fp32.json",
            "--mode",
            "finetune",
            "--weights",
            str(folder),
            "--set",
            "parallel.ep_size=2",
            "--set",
            f"data.root={shards}",
            "--set",
            "data.datasets=[{name: ns2d_fno_1e-3}]",
            "--set",
            f"train.output_dir={out}",
            "--set",
            "train.steps=3",
            "--set",
            "train.log_every=1",
            "--set",
            "train.micro_batch_per_rank=4",
            "--set",
            "train.eval_every=100",
            "--set",
            "train.eval_trajectories=1",
        ],
    )
    assert [h["moe/temperature"] for h in _history(out)] == [0.5, 0.5, 0.5]
    before, after = load_file(str(folder / "model.safetensors")), read_checkpoint_state(out / "checkpoints")
    router = [k for k in before if ".gate.scorer." in k or ".features." in k]
    assert router and all(torch.equal(before[k], after[k]) for k in router)  # incl. BatchNorm running stats
    expert = "blocks.0.moe.deepspeed_moe.experts.deepspeed_experts.0.proj.weight"
    assert not torch.equal(before[expert], after[expert])
    assert not torch.equal(before["blocks.0.filter.w1"], after["blocks.0.filter.w1"])
