"""L2RE counts only real points and channels, and padded channels give no NaN gradient."""

from __future__ import annotations

import torch

from nestor_ds.engine.losses import l2re


def test_l2re_matches_definition_over_valid_channels() -> None:
    torch.manual_seed(0)
    pred, target = torch.randn(2, 8, 8, 1, 3), torch.randn(2, 8, 8, 1, 3)
    mask = torch.zeros(2, 8, 8, 1, 3)
    mask[..., :2] = 1  # third channel is padding
    mask[:, :2, :, :, :] = 0  # and the first two rows are not real points
    got = l2re(pred, target, mask)
    for b in range(2):
        errs = [
            ((pred[b, 2:, :, :, c] - target[b, 2:, :, :, c]).norm() / target[b, 2:, :, :, c].norm()).item()
            for c in range(2)
        ]
        assert abs(got[b].item() - sum(errs) / 2) < 1e-5


def test_padded_channels_do_not_poison_gradients() -> None:
    pred = torch.randn(2, 4, 4, 1, 2, requires_grad=True)
    target = torch.randn(2, 4, 4, 1, 2)
    target[..., 1] = 0
    mask = torch.ones(2, 4, 4, 1, 2)
    mask[..., 1] = 0
    l2re(pred, target, mask).mean().backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[..., 1].abs().sum() == 0 and pred.grad[..., 0].abs().sum() > 0
