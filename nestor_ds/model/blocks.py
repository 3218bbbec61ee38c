"""The three block kinds: NESTOR's nested-MoE block, DPOT's AFNO block, MoE-POT's AFNO + sample-MoE block."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.profiler import record_function

from nestor_ds.config.schema import ModelConfig
from nestor_ds.model.afno import AFNOBlock, AFNOFilter, group_norm
from nestor_ds.model.attention import AttentionExpert
from nestor_ds.model.expert_parallel import SampleMoE
from nestor_ds.model.grouped import RowGroups, grouped_linear, one_group, stacked
from nestor_ds.model.routing import MoEPOTScorer


def hidden_width(cfg: ModelConfig) -> int:
    """The MLP width: ``width * mlp_ratio`` truncated, as DPOT computes it."""
    return max(1, int(cfg.width * cfg.mlp_ratio + 1e-9))  # truncated, as DPOT computes its MLP width


def afno_modes(cfg: ModelConfig) -> tuple[int, ...]:
    """Fourier modes kept per axis: ``afno_modes`` on x and y, DPOT-3D's ``afno_modes_z`` on a third axis (or one
    count per axis, as given)."""
    if isinstance(cfg.afno_modes, list):
        return tuple(cfg.afno_modes)
    return (cfg.afno_modes,) * 2 + ((cfg.afno_modes_z,) if cfg.dims == 3 else ())


def to_tokens(h: torch.Tensor) -> torch.Tensor:
    """[B, C, *latent] map -> [B, N, C] tokens (row-major over the latent axes, as ``b c x y -> b (x y) c``)."""
    return h.flatten(2).transpose(1, 2)


def from_tokens(tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B, N, C] tokens back to the [B, C, *latent] map ``like`` came as."""
    return tokens.transpose(1, 2).reshape(like.shape[0], tokens.shape[-1], *like.shape[2:])


def _on_tokens(moe: SampleMoE, h: torch.Tensor) -> torch.Tensor:
    """Run a sample-level MoE on a [B, C, X, Y] map as [B, X*Y, C] tokens."""
    return from_tokens(moe(to_tokens(h)), h)


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
        total = outs[0]
        for o in outs[1:]:
            total = total + o
        return total / len(outs) if self.strategy == "mean" else total


class NestedMoEBlock(nn.Module):
    """x + Fusion(sum_k w_k AttnExpert_k(h), SharedAFNO(h), h) with h = GroupNorm(x).

    The expert exchange is issued before the shared path runs and waited for after it (overlap).

    The shared path is the reference's ``shared_afno``: two stacked double-skip DPOT AFNO blocks
    whose channel MLP is D wide (the reference's ``AFNOExpert`` default).
    """

    def __init__(self, cfg: ModelConfig, layer: int, ep_size: int, seed: int, ep_rank: int | None) -> None:
        super().__init__()
        hidden = hidden_width(cfg)
        self.norm = group_norm(cfg.width)

        def make_expert() -> AttentionExpert:
            return AttentionExpert(
                cfg.width,
                cfg.heads,
                hidden,
                cfg.sub_moe.experts,
                cfg.sub_moe.top_k,
                cfg.sub_moe.shared_experts,
                cfg.ablation.sub_moe,
                cfg.attention_dropout,
                cfg.attention,
            )

        m = cfg.moe
        self.moe = SampleMoE(
            make_expert,
            nn.Linear(cfg.width, m.experts),
            moe=m,
            out_width=cfg.width,
            ep_size=ep_size,
            seed=seed,
            layer=layer,
            ep_rank=ep_rank,
        )
        self.afno = None
        if cfg.ablation.shared_afno:
            self.afno = nn.Sequential(
                *(AFNOBlock(cfg.width, cfg.afno_blocks, afno_modes(cfg), cfg.width, True, cfg.dims) for _ in range(2))
            )
        self.fusion = Fusion(cfg.fusion, 3 if self.afno is not None else 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, D, *latent]
        h = self.norm(x)
        # the samples' all-to-all is in flight while the shared AFNO path, which does not need it, runs
        flight = self.moe.start(to_tokens(h))
        with record_function("nestor.shared_afno"):  # named in profiler traces (scripts/trace_overlap.py)
            afno = self.afno(h) if self.afno is not None else None
        with record_function("nestor.experts"):
            moe = from_tokens(self.moe.finish(flight), h)
        paths = (moe, afno, h) if afno is not None else (moe, h)
        return x + self.fusion(*paths)


class DPOTBlock(AFNOBlock):
    """DPOT's block as DPOTNet builds it (``double_skip=False``)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(
            cfg.width, cfg.afno_blocks, afno_modes(cfg), hidden_width(cfg), double_skip=False, dims=cfg.dims
        )


class MoEPOTExpert(nn.Module):
    """One MoE-POT expert, ``GELU(1x1 conv)`` from the features to D, on token rows [n, N, H]."""

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, width)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, aux, counts = self.run_grouped([self], x, one_group(x.shape[0], x.device, valid))
        return y, aux[0], counts[0]

    def reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The expert on one group of rows, unbatched: (output, aux, counts), as ``run_grouped``."""
        return nn.functional.gelu(self.proj(x)), x.new_zeros((), dtype=torch.float32), x.new_zeros(0, dtype=torch.long)

    @staticmethod
    def run_grouped(
        experts: Sequence["MoEPOTExpert"], x: torch.Tensor, g: RowGroups
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All local experts on rows sorted by expert, in grouped GEMMs."""
        y = grouped_linear(x, g, stacked(experts, lambda e: e.proj.weight), stacked(experts, lambda e: e.proj.bias))
        return (
            nn.functional.gelu(y),
            x.new_zeros(len(experts), dtype=torch.float32),
            x.new_zeros(len(experts), 0, dtype=torch.long),
        )


class MoEPOTBlock(nn.Module):
    """MoE-POT's block: DPOT's spectral half, then a sample-level MoE in place of the channel MLP.

    features = GELU(conv(h)); the router scores the pooled features; the output is the mean of the
    shared experts plus the weighted chosen experts, all fed the features, plus the block input.
    """

    def __init__(self, cfg: ModelConfig, layer: int, ep_size: int, seed: int, ep_rank: int | None) -> None:
        super().__init__()
        hidden, m = hidden_width(cfg), cfg.moe
        self.norm1, self.norm2 = group_norm(cfg.width), group_norm(cfg.width)
        self.filter = AFNOFilter(cfg.width, cfg.afno_blocks, afno_modes(cfg))
        self.features = nn.Sequential(nn.Conv2d(cfg.width, hidden, 1), nn.GELU())
        self.moe = SampleMoE(
            lambda: MoEPOTExpert(hidden, cfg.width),
            MoEPOTScorer(hidden, m.experts),
            moe=m,
            out_width=cfg.width,
            ep_size=ep_size,
            seed=seed,
            layer=layer,
            ep_rank=ep_rank,
        )
        # named without "expert": dense parameters, not DeepSpeed expert shards
        self.shared = nn.ModuleList(
            nn.Sequential(nn.Conv2d(hidden, cfg.width, 1), nn.GELU()) for _ in range(m.shared_experts)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(self.norm2(self.filter(self.norm1(x))))
        shared = torch.zeros_like(x)
        for mlp in self.shared:
            shared = shared + mlp(f) / len(self.shared)
        return shared + _on_tokens(self.moe, f) + x
