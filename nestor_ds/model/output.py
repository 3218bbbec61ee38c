"""What every model variant returns: the prediction plus the MoE statistics to log and to train on."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModelOutput:
    pred: torch.Tensor  # [B, X, Y, T_out, C]
    aux_image: torch.Tensor  # scalar, differentiable (0 without image-level MoE)
    aux_token: torch.Tensor  # scalar, differentiable (0 without Sub-MoE)
    # detached logging statistics, summed over the expert-parallel group
    image_load: torch.Tensor | None = None  # [layers, E] top-k assignments per expert
    token_load: torch.Tensor | None = None  # [layers, E, E'] token assignments per sub-expert
    dropped: torch.Tensor | None = None  # [layers] routes dropped by capacity
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
