"""The Sub-MoE runs a training step without reading anything back from the device."""
from __future__ import annotations

import torch

from nestor_ds.model.benchmark import count_host_syncs, count_ops
from nestor_ds.model.sub_moe import SubMoE, loop_sub_moe


def _step(fn) -> None:
    out = fn()
    out = out[0] if isinstance(out, tuple) else out
    out.square().mean().backward()


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


def test_sub_moe_step_runs_fewer_ops_than_the_loop() -> None:
    torch.manual_seed(0)
    moe = SubMoE(64, 64, experts=6, top_k=2, shared=1)
    x = torch.randn(4, 256, 64, requires_grad=True)
    grouped, loop = count_ops(lambda: _step(lambda: moe(x))), count_ops(lambda: _step(lambda: loop_sub_moe(moe, x)))
    assert grouped * 2 < loop, (grouped, loop)
