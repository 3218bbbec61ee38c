"""The neural operator shared by all variants: encoder, a stack of blocks, output head."""
from __future__ import annotations

import torch
from torch import nn

from nestor_ds.config.schema import ModelConfig
from nestor_ds.model.encoder import OutputHead, SpatioTemporalEncoder
from nestor_ds.model.expert_parallel import SampleMoE
from nestor_ds.model.moe_stats import reduce_moe_stats
from nestor_ds.model.output import ModelOutput


class NeuralOperator(nn.Module):
    """[B, X, Y, T_in, C] -> ModelOutput with pred [B, X, Y, T_out, C] and MoE statistics."""

    def __init__(self, cfg: ModelConfig, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SpatioTemporalEncoder(cfg.channels, cfg.t_in, cfg.width, cfg.patch_size, cfg.resolution)
        self.blocks = nn.ModuleList(blocks)
        self.head = OutputHead(cfg.width, cfg.decoder_width, cfg.patch_size, cfg.channels, cfg.t_out)

    @property
    def moe_layers(self) -> list[SampleMoE]:
        return [m for m in self.modules() if isinstance(m, SampleMoE)]

    def set_step(self, step: int) -> None:
        """Anneal the router temperature (MoE-POT); a no-op when start == end."""
        m = self.cfg.moe
        frac = min(1.0, step / m.anneal_steps) if m.anneal_steps else 1.0
        temp = m.temperature_start + frac * (m.temperature_end - m.temperature_start)
        for layer in self.moe_layers:
            layer.set_temperature(temp)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        c = self.cfg
        if x.dim() != 5 or tuple(x.shape[1:]) != (x.shape[1], x.shape[1], c.t_in, c.channels):
            raise ValueError(f"expected input [B, X, X, t_in={c.t_in}, channels={c.channels}], got {tuple(x.shape)}")
        if x.shape[1] % c.patch_size:
            raise ValueError(f"input resolution {x.shape[1]} is not divisible by patch_size={c.patch_size}")
        z = self.encoder(x)
        for block in self.blocks:
            z = block(z)
        pred = self.head(z)
        return reduce_moe_stats(self.moe_layers, pred, c.ablation.load_balancing)
