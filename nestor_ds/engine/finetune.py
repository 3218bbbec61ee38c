"""Start from pre-trained weights, possibly with another channel count, and freeze parts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch

from nestor_ds.errors import CheckpointError
from nestor_ds.model.export import local_state_dict, read_weights
from nestor_ds.model.routing import MoEPOTScorer

log = logging.getLogger(__name__)


def load_pretrained(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Load every weight whose name and shape fit; return the names left at their fresh init.

    Encoder input and output head change shape with the channel count; they start fresh.
    """
    state = local_state_dict(model, read_weights(path))
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(fitting))
    if not fitting:
        raise CheckpointError(f"{path}: no weight fits this model (is it a checkpoint of another variant?)")
    model.load_state_dict(fitting, strict=False)
    if skipped:
        log.info(
            "fine-tuning from %s: %d tensors start fresh (shape or name differs): %s",
            path,
            len(skipped),
            ", ".join(skipped[:6]) + (" ..." if len(skipped) > 6 else ""),
        )
    return skipped


def freeze(model: torch.nn.Module, parts: list[str]) -> int:
    """Freeze routers and/or the encoder; returns the frozen parameter count.

    Routers are the image-level gates, the Sub-MoE routers and, for MoE-POT, the feature extractor the
    gate reads (MoE-POT's fine-tuning freezes both and keeps the gate's BatchNorms on running statistics).
    """
    frozen = 0
    for name, p in model.named_parameters():
        router = ".gate.scorer." in name or ".router." in name or ".features." in name
        if ("routers" in parts and router) or ("encoder" in parts and name.startswith("encoder.")):
            p.requires_grad_(False)
            frozen += p.numel()
    if "routers" in parts:
        for module in model.modules():
            if isinstance(module, MoEPOTScorer):
                module.frozen = True
                module.eval()
    return frozen


def default_freeze(variant: str, configured: Sequence[str] | None) -> list[str]:
    """What fine-tuning keeps fixed when the config does not say: MoE-POT's routers, as MoE-POT does."""
    if configured is not None:
        return list(configured)
    return ["routers"] if variant == "moepot" else []
