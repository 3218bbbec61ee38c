"""The grouped local experts (one grouped GEMM per layer for all experts) compute what the reference
loop (one expert after another, module by module) computes: outputs, losses, loads and gradients."""

from __future__ import annotations

import pytest
import torch
from conftest import variant

from nestor_ds.model import build_model
from nestor_ds.model.grouped import group_mm, row_groups

TOL = dict(rtol=1e-4, atol=1e-5)


def _run(cfg, x: torch.Tensor) -> tuple[object, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    out = model(x)
    (out.pred.square().mean() + out.aux_image + out.aux_token).backward()
    return out, {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "model_variant,drop,sub_moe",
    [
        ("nestor", False, True),
        ("nestor", True, True),
        ("nestor", False, False),
        ("moepot", False, True),
    ],
)
def test_grouped_equals_the_reference_loop(tiny_model_cfg, model_variant: str, drop: bool, sub_moe: bool) -> None:
    cfg = variant(
        tiny_model_cfg,
        variant=model_variant,
        moe__drop_tokens=drop,
        moe__capacity_factor=0.5,
        ablation__sub_moe=sub_moe,
    )
    x = torch.randn(8, 32, 32, 4, 4)
    grouped, grouped_grads = _run(cfg, x)
    loop, loop_grads = _run(variant(cfg, moe__expert_compute="loop"), x)
    torch.testing.assert_close(grouped.pred, loop.pred, **TOL)
    torch.testing.assert_close(grouped.aux_image, loop.aux_image, **TOL)
    torch.testing.assert_close(grouped.aux_token, loop.aux_token, **TOL)
    assert torch.equal(grouped.image_load, loop.image_load) and torch.equal(grouped.token_load, loop.token_load)
    assert torch.equal(grouped.dropped, loop.dropped) and (grouped.dropped > 0).all() == drop
    assert loop_grads.keys() <= grouped_grads.keys()
    for name, grad in grouped_grads.items():  # an expert the loop never ran has no gradient: zero here
        torch.testing.assert_close(grad, loop_grads.get(name, torch.zeros_like(grad)), **TOL, msg=name)


def test_group_mm_fallback_equals_grouped_gemm(monkeypatch) -> None:
    """Where grouped GEMM does not apply (fp32/fp16 on a GPU), every group runs masked: same rows, same grads.
    Empty groups and padding rows (folded into the last group) included."""
    from nestor_ds.model import grouped

    torch.manual_seed(0)
    g = row_groups(torch.tensor([0, 0, 2, 2, 2, 3, 3]), 3)  # group 1 empty, two padding rows (id 3)
    assert g.offs.tolist() == [2, 2, 7] and g.valid.tolist() == [True] * 5 + [False] * 2
    x = torch.randn(7, 8, requires_grad=True)
    w = torch.randn(3, 8, 4, requires_grad=True)
    fast = group_mm(x, w, g.offs)
    fast_grads = torch.autograd.grad((fast * torch.arange(4.0)).sum(), [x, w])
    monkeypatch.setattr(grouped, "grouped_mm_applies", lambda *a: False)
    slow = group_mm(x, w, g.offs)
    slow_grads = torch.autograd.grad((slow * torch.arange(4.0)).sum(), [x, w])
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(fast[:2], x[:2] @ w[0])
    torch.testing.assert_close(fast[2:], x[2:] @ w[2])
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b)
