"""The three block kinds: NESTOR's nested-MoE block, DPOT's AFNO block, MoE-POT's AFNO + sample-MoE block."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from nestor_ds.config.schema import ModelConfig
from nestor_ds.model.afno import AFNOFilter, ChannelMLP, SharedAFNO, group_norm
from nestor_ds.model.attention import AttentionExpert
from nestor_ds.model.expert_parallel import SampleMoE


def hidden_width(cfg: ModelConfig) -> int:
    return max(1, int(round(cfg.width * cfg.mlp_ratio)))


class Fusion(nn.Module):
    """Combine the MoE output, the shared AFNO output and the block input."""

    def __init__(self, strategy: str, paths: int) -> None:
        super().__init__()
        self.strategy, self.paths = strategy, paths
        if strategy == "gated":
            self.gates = nn.Parameter(torch.ones(paths))

    def forward(self, *outs: torch.Tensor) -> torch.Tensor:
        if self.strategy == "gated":
            return sum(g * o for g, o in zip(self.gates, outs))
        total = sum(outs)
        return total / len(outs) if self.strategy == "mean" else total


class NestedMoEBlock(nn.Module):
    """x + Fusion(sum_k w_k AttnExpert_k(h), SharedAFNO(h), h) with h = GroupNorm(x)."""

    def __init__(self, cfg: ModelConfig, layer: int, ep_size: int, seed: int, ep_rank: int | None) -> None:
        super().__init__()
        hidden = hidden_width(cfg)
        self.norm = group_norm(cfg.width)

        def make_expert() -> AttentionExpert:
            return AttentionExpert(cfg.width, cfg.heads, hidden, cfg.sub_moe.experts, cfg.sub_moe.top_k,
                                   cfg.sub_moe.shared_experts, cfg.ablation.sub_moe, cfg.attention_dropout,
                                   cfg.attention)

        m = cfg.moe
        self.moe = SampleMoE(make_expert, cfg.width, m.experts, m.top_k, m.capacity_factor, m.drop_tokens,
                             ep_size, seed, layer, ep_rank)
        self.afno = SharedAFNO(cfg.width, cfg.afno_blocks, cfg.afno_modes, hidden) if cfg.ablation.shared_afno else None
        self.fusion = Fusion(cfg.fusion, 3 if self.afno is not None else 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, D, H, W]
        h = self.norm(x)
        grid = h.shape[-1]
        moe = rearrange(self.moe(rearrange(h, "b d x y -> b (x y) d")), "b (x y) d -> b d x y", y=grid)
        paths = (moe, self.afno(h), h) if self.afno is not None else (moe, h)
        return x + self.fusion(*paths)


class DPOTBlock(nn.Module):
    """Dense baseline: x + AFNO(norm x), then x + ChannelMLP(norm x)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1, self.norm2 = group_norm(cfg.width), group_norm(cfg.width)
        self.filter = AFNOFilter(cfg.width, cfg.afno_blocks, cfg.afno_modes)
        self.mlp = ChannelMLP(cfg.width, hidden_width(cfg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.filter(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokenMLP(nn.Module):
    """A 1x1-conv MLP expert on token rows [n, N, D], in the (y, aux, counts) expert protocol."""

    num_sub_experts = 0

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.fc2(F.gelu(self.fc1(x))), x.new_zeros(()), x.new_zeros(0, dtype=torch.long)


class MoEPOTBlock(nn.Module):
    """MoE-POT: DPOT block whose channel MLP is a sample-level MoE plus always-on shared MLPs."""

    def __init__(self, cfg: ModelConfig, layer: int, ep_size: int, seed: int, ep_rank: int | None) -> None:
        super().__init__()
        hidden = hidden_width(cfg)
        self.norm1, self.norm2 = group_norm(cfg.width), group_norm(cfg.width)
        self.filter = AFNOFilter(cfg.width, cfg.afno_blocks, cfg.afno_modes)
        m = cfg.moe
        self.moe = SampleMoE(lambda: TokenMLP(cfg.width, hidden), cfg.width, m.experts, m.top_k,
                             m.capacity_factor, m.drop_tokens, ep_size, seed, layer, ep_rank)
        # named without "expert": they are dense parameters, not DeepSpeed expert shards
        self.shared_mlps = nn.ModuleList(ChannelMLP(cfg.width, hidden) for _ in range(m.shared_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.filter(self.norm1(x))
        h = self.norm2(x)
        grid = h.shape[-1]
        out = rearrange(self.moe(rearrange(h, "b d x y -> b (x y) d")), "b (x y) d -> b d x y", y=grid)
        for mlp in self.shared_mlps:
            out = out + mlp(h)
        return x + out
