"""Build a model from its config, keyed by ``model.variant``."""

from __future__ import annotations

from typing import Callable

import torch

from nestor_ds.config.schema import ModelConfig
from nestor_ds.model.blocks import DPOTBlock, MoEPOTBlock, NestedMoEBlock
from nestor_ds.model.operator import NeuralOperator

Builder = Callable[[ModelConfig, int, int, "int | None"], NeuralOperator]


def _nestor(cfg: ModelConfig, ep_size: int, seed: int, ep_rank: int | None) -> NeuralOperator:
    return NeuralOperator(cfg, [NestedMoEBlock(cfg, i, ep_size, seed, ep_rank) for i in range(cfg.blocks)])


def _dpot(cfg: ModelConfig, ep_size: int, seed: int, ep_rank: int | None) -> NeuralOperator:
    if ep_size != 1:
        raise ValueError(f"dpot is dense: ep_size must be 1, got {ep_size}")
    return NeuralOperator(cfg, [DPOTBlock(cfg) for _ in range(cfg.blocks)])


def _moepot(cfg: ModelConfig, ep_size: int, seed: int, ep_rank: int | None) -> NeuralOperator:
    return NeuralOperator(cfg, [MoEPOTBlock(cfg, i, ep_size, seed, ep_rank) for i in range(cfg.blocks)])


MODELS: dict[str, Builder] = {"nestor": _nestor, "dpot": _dpot, "moepot": _moepot}


def build_model(cfg: ModelConfig, ep_size: int = 1, seed: int = 0, ep_rank: int | None = None) -> NeuralOperator:
    """Same seed -> same weights for every ep_size (experts are seeded by their global id)."""
    if cfg.variant not in MODELS:
        raise ValueError(f"unknown model.variant {cfg.variant!r}; known: {', '.join(MODELS)}")
    torch.manual_seed(seed)
    model = MODELS[cfg.variant](cfg, ep_size, seed, ep_rank)
    model.set_step(0)
    return model
