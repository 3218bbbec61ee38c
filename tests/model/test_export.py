"""Experts are seeded by global id, and consolidated weights load into any ep_size."""

from __future__ import annotations

import pytest
import torch

from nestor_ds.errors import CheckpointError
from nestor_ds.model import build_model
from nestor_ds.model.export import global_state_dict, load_consolidated, save_consolidated


def test_expert_weights_do_not_depend_on_ep_size(tiny_model_cfg) -> None:
    full = global_state_dict(build_model(tiny_model_cfg, ep_size=1))
    merged = {}
    for rank in range(2):
        merged.update(global_state_dict(build_model(tiny_model_cfg, ep_size=2, ep_rank=rank)))
    assert merged.keys() == full.keys()
    for key in full:
        assert torch.equal(merged[key], full[key]), key
    e0 = [v for k, v in full.items() if "deepspeed_experts.0.attn.qkv.weight" in k][0]
    e1 = [v for k, v in full.items() if "deepspeed_experts.1.attn.qkv.weight" in k][0]
    assert not torch.equal(e0, e1)  # experts start different


def test_consolidated_round_trip_between_ep_sizes(tiny_model_cfg, tmp_path) -> None:
    source = build_model(tiny_model_cfg, ep_size=1, seed=7)
    path = save_consolidated(global_state_dict(source), tmp_path / "w.safetensors")
    assert not list(tmp_path.glob("*.partial"))
    for rank in range(2):
        shard = build_model(tiny_model_cfg, ep_size=2, ep_rank=rank, seed=0)
        load_consolidated(shard, path)
        want = global_state_dict(source)
        for key, value in global_state_dict(shard).items():
            assert torch.equal(value, want[key]), key
    target = build_model(tiny_model_cfg, ep_size=1, seed=0)
    load_consolidated(target, path)
    x = torch.randn(4, 32, 32, 4, 4)
    source.eval(), target.eval()
    with torch.no_grad():
        assert torch.equal(source(x).pred, target(x).pred)


def test_loading_into_a_different_model_is_refused(tiny_model_cfg, tmp_path) -> None:
    path = save_consolidated(global_state_dict(build_model(tiny_model_cfg)), tmp_path / "w.safetensors")
    other = build_model(tiny_model_cfg.model_copy(update={"variant": "dpot"}))
    with pytest.raises(ValueError, match="w.safetensors does not fit this model"):
        load_consolidated(other, path)
    with pytest.raises(CheckpointError, match="missing.safetensors"):
        load_consolidated(other, tmp_path / "missing.safetensors")
