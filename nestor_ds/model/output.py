"""What every model variant returns: the prediction plus the MoE statistics to log and to train on."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModelOutput:
    """What a forward returns: the prediction, the aux losses and the routing statistics."""

    pred: torch.Tensor  # [B, X, Y, T_out, C]
    aux_image: torch.Tensor  # scalar, differentiable (0 without image-level MoE)
    aux_token: torch.Tensor  # scalar, differentiable (0 without Sub-MoE)
    # detached logging statistics, summed over the expert-parallel group
    image_load: torch.Tensor | None = None  # [layers, E] top-k assignments per expert
    token_load: torch.Tensor | None = None  # [layers, E, E'] token assignments per sub-expert
    dropped: torch.Tensor | None = None  # [layers] routes dropped by capacity
    # per layer, differentiable: image-level aux, and token-level aux summed over the active experts
    aux_image_layers: torch.Tensor | None = None  # [layers]
    aux_token_layers: torch.Tensor | None = None  # [layers]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def aux_losses(self, reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(image, token) aux terms: ``mean`` over layers (token: per expert), or ``reference``: summed
        over layers and, token-level, over the active experts, as the NESTOR and MoE-POT trainers do."""
        if reduction == "mean" or self.aux_image_layers is None or self.aux_token_layers is None:
            return self.aux_image, self.aux_token
        return self.aux_image_layers.sum(), self.aux_token_layers.sum()
