"""The derived DeepSpeed config: batch arithmetic and refusals checked against the world size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestor_ds.config import ConfigError, build_deepspeed_config, load_config

REPO = Path(__file__).resolve().parents[2]
DS = REPO / "ds_configs"


@pytest.fixture
def tiny():
    return load_config(REPO / "configs" / "tiny_cpu.yaml")


@pytest.mark.parametrize("name", ["cpu_fp32", "zero1_bf16", "zero2_bf16"])
def test_shipped_ds_configs_derive(tiny, name: str) -> None:
    ds = build_deepspeed_config(tiny, DS / f"{name}.json", world_size=4)
    assert ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["train_batch_size"] == 4 * 1 * 4
    assert ds["bf16"]["enabled"] == name.endswith("bf16")
    assert ds["zero_optimization"]["stage"] == {"cpu_fp32": 0, "zero1_bf16": 1, "zero2_bf16": 2}[name]
    # ZeRO-0: DeepSpeed's clipping is wrong with expert shards, the engine clips itself
    assert ds["gradient_clipping"] == (0.0 if name == "cpu_fp32" else tiny.train.grad_clip)


def test_grad_accum_enters_the_global_batch() -> None:
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml", {"train.grad_accum": 3})
    ds = build_deepspeed_config(cfg, DS / "cpu_fp32.json", world_size=2)
    assert (ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (3, 4 * 3 * 2)


def _refused(cfg, ds, world, *words):
    with pytest.raises(ConfigError) as info:
        build_deepspeed_config(cfg, ds, world)
    for w in words:
        assert w in str(info.value), str(info.value)


def test_world_not_divisible_by_ep(tiny) -> None:
    _refused(tiny, DS / "cpu_fp32.json", 3, "world size 3", "parallel.ep_size=2")


def test_batch_arithmetic_that_does_not_add_up(tiny) -> None:
    ds = json.loads((DS / "cpu_fp32.json").read_text()) | {"train_batch_size": 10}
    _refused(tiny, ds, 2, "batch sizes do not add up", "train_batch_size=10", "gives train_batch_size=8")


def test_zero3_in_json_refused_for_moe(tiny) -> None:
    ds = {"zero_optimization": {"stage": 3}}
    _refused(tiny, ds, 2, "ZeRO stage 3", "MoE")


def test_stage_conflict_between_json_and_run_config() -> None:
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml", {"parallel.zero_stage": 1})
    _refused(cfg, DS / "zero2_bf16.json", 2, "zero_optimization.stage=2", "parallel.zero_stage=1")


def test_precision_conflict(tiny) -> None:
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml", {"parallel.precision": "fp32"})
    _refused(cfg, DS / "zero1_bf16.json", 2, "selects precision bf16", "parallel.precision=fp32")


def test_optimizer_in_json_refused(tiny) -> None:
    _refused(tiny, {"optimizer": {"type": "Adam"}}, 2, "remove 'optimizer'", "train section")


def test_ep_on_dense_model_refused() -> None:
    cfg = load_config(REPO / "configs" / "dpot_ti.yaml", {"parallel.ep_size": 2})
    _refused(cfg, DS / "cpu_fp32.json", 2, "ep_size=2", "needs an MoE model", "dpot")


def test_missing_and_broken_json(tiny, tmp_path: Path) -> None:
    _refused(tiny, tmp_path / "none.json", 2, "none.json does not exist")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _refused(tiny, bad, 2, "bad.json is not valid JSON")
