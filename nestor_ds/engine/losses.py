"""L2 relative error per sample and channel, over real grid points and channels only."""

from __future__ import annotations

import torch


def l2re(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """pred/target [B, X, Y, T, C]; mask broadcastable to them (1 = real). Returns [B]: mean over valid channels."""
    diff, ref = (pred - target).float(), target.float()
    if mask is not None:
        m = mask.to(diff.dtype)
        diff, ref = diff * m, ref * m
        valid = (m.flatten(1, -2).amax(dim=1) > 0).to(diff.dtype)  # [B or 1, C]
    else:
        valid = torch.ones(pred.shape[0], pred.shape[-1], device=pred.device)
    # clamp before sqrt: a padded channel has a zero norm, and sqrt'(0) would turn its zero gradient into NaN
    num = diff.square().flatten(1, -2).sum(dim=1).clamp_min(1e-30).sqrt()  # [B, C]
    den = ref.square().flatten(1, -2).sum(dim=1).clamp_min(1e-30).sqrt()
    per_channel = num / (den + eps)
    valid = valid.expand_as(per_channel)
    return (per_channel * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1)
