"""Parameter accounting on the published configurations, and per-rank expert shards."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO
from deepspeed.moe.utils import is_moe_param

from nestor_ds.config import load_config
from nestor_ds.model import build_model
from nestor_ds.model.params import param_report


def test_published_tiny_figures() -> None:
    cfg = load_config(REPO / "configs" / "nestor_tiny.yaml").model
    r = param_report(cfg, ep_size=2)
    assert 80e6 < r.total < 88e6  # paper: about 83M (exact relation: test_published.py)
    assert 17e6 < r.active_per_sample < 22e6  # paper: about 20M active
    assert r.per_rank == r.dense + cfg.blocks * (cfg.moe.experts // 2) * r.per_expert
    assert r.total == r.dense + cfg.blocks * cfg.moe.experts * r.per_expert


def test_each_rank_holds_only_its_share(tiny_model_cfg) -> None:
    full = build_model(tiny_model_cfg, ep_size=1)
    full_experts = sum(p.numel() for p in full.parameters() if is_moe_param(p))
    for rank in range(2):
        shard = build_model(tiny_model_cfg, ep_size=2, ep_rank=rank)
        assert sum(p.numel() for p in shard.parameters() if is_moe_param(p)) == full_experts // 2
        assert param_report(tiny_model_cfg, 2).per_rank == sum(p.numel() for p in shard.parameters())


def test_params_command_prints_figures() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nestor_ds", "params", "--config", "configs/nestor_tiny.yaml", "--ep-size", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    for label in ("total parameters", "active per sample", "held per rank", "active share"):
        assert label in out.stdout
    assert "86.27 M" in out.stdout and "ep_size 2" in out.stdout
    assert "reference NESTOR Tiny     83,120,263" in out.stdout  # the published count beside ours
