"""A MoE training step never reads anything back from the device, and runs far fewer kernels than the
one-expert-at-a-time loop it replaced (``model.moe.expert_compute: loop``, kept as the reference)."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO, variant

from nestor_ds.config import load_config
from nestor_ds.model import build_model
from nestor_ds.model.sub_moe import SubMoE, loop_sub_moe
from nestor_ds.profiling import count_host_syncs, count_ops


def _step(fn) -> None:
    out = fn()
    out = out[0] if isinstance(out, tuple) else out
    out.square().mean().backward()


def _model_step(model: torch.nn.Module, x: torch.Tensor) -> None:
    out = model(x)
    (out.pred.square().mean() + out.aux_image + out.aux_token).backward()
    model.zero_grad(set_to_none=True)


def test_sub_moe_step_has_no_host_sync_and_the_loop_has() -> None:
    torch.manual_seed(0)
    moe = SubMoE(64, 64, experts=6, top_k=2, shared=1)
    x = torch.randn(4, 256, 64, requires_grad=True)
    with count_host_syncs() as grouped:
        _step(lambda: moe(x))
    assert sum(grouped.values()) == 0, dict(grouped)
    with count_host_syncs() as loop:  # the detector does see the syncs of the old Python loop
        _step(lambda: loop_sub_moe(moe, x))
    assert loop["nonzero"] == 6


@pytest.mark.parametrize("model_variant,drop", [("nestor", False), ("nestor", True), ("moepot", False)])
def test_model_training_step_has_no_host_sync(tiny_model_cfg, model_variant: str, drop: bool) -> None:
    """Forward and backward of the whole model, dropless (the default) or dropping, in training mode."""
    cfg = variant(tiny_model_cfg, variant=model_variant, moe__drop_tokens=drop, moe__capacity_factor=0.5)
    model = build_model(cfg).train()
    x = torch.randn(8, 32, 32, 4, 4)
    _model_step(model, x)  # first call: lazy initialisation may read sizes
    with count_host_syncs() as syncs:
        _model_step(model, x)
    assert sum(syncs.values()) == 0, dict(syncs)
    loop = build_model(variant(cfg, moe__expert_compute="loop")).train()
    with count_host_syncs() as syncs:
        _model_step(loop, x)
    assert syncs["nonzero"] > 0  # the reference loop reads every expert's row count


def test_tiny_training_step_runs_a_third_of_the_loops_kernels() -> None:
    """NESTOR Tiny's shape (width 512, 6x6 experts) at resolution 32, batch 8: kernel-running ATen ops of one
    forward+backward, grouped against the one-expert-at-a-time loop."""
    cfg = load_config(REPO / "configs" / "nestor_tiny.yaml").model
    counts = {}
    for compute in ("grouped", "loop"):
        torch.manual_seed(0)
        model = build_model(variant(cfg, resolution=32, moe__expert_compute=compute))
        x = torch.randn(8, 32, 32, cfg.t_in, cfg.channels)
        _model_step(model, x)
        counts[compute] = count_ops(lambda: _model_step(model, x))
    assert counts["grouped"] * 3 <= counts["loop"], counts
