"""Multi-head self-attention on a fused kernel, and NESTOR's attention expert."""

from __future__ import annotations

import importlib.util
from typing import Literal, Sequence, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from nestor_ds.model.grouped import (
    RowGroups,
    grouped_layer_norm,
    grouped_linear,
    one_group,
    stacked,
)
from nestor_ds.model.sub_moe import (
    SubMoE,
    SwiGLU,
    grouped_swiglu,
    loop_sub_moe,
    run_sub_moes,
)

Backend = Literal["auto", "sdpa", "flash"]
HAS_FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None


def fused_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float, backend: Backend
) -> torch.Tensor:
    """q, k, v: [B, heads, N, d]. flash-attn on CUDA half precision when asked/available, else SDPA."""
    half = q.dtype in (torch.float16, torch.bfloat16)
    want_flash = backend == "flash" or (backend == "auto" and HAS_FLASH_ATTN)
    if want_flash and q.is_cuda and half:
        if not HAS_FLASH_ATTN:
            raise RuntimeError("model.attention='flash' but the flash-attn package is not installed")
        from flash_attn import flash_attn_func

        out = flash_attn_func(*(t.transpose(1, 2) for t in (q, k, v)), dropout_p=dropout)
        return out.transpose(1, 2)
    if backend == "flash" and not (q.is_cuda and half):
        raise RuntimeError("model.attention='flash' needs CUDA tensors in fp16/bf16; use 'auto' or 'sdpa'")
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens with a fused kernel (SDPA, or flash-attn when asked)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0, backend: Backend = "auto") -> None:
        super().__init__()
        self.heads, self.dropout, self.backend = heads, dropout, backend
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, D]
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        out = fused_attention(q, k, v, self.dropout if self.training else 0.0, self.backend)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class AttentionExpert(nn.Module):
    """One image-level expert: attention + LayerNorm, then a token-level Sub-MoE (or dense FFN) + LayerNorm.

    The residuals add the block input (not V, a defect of the reference code).
    ``run_grouped`` runs several of them on rows grouped by expert in one pass; ``reference`` is the
    plain module-by-module computation (Python-loop Sub-MoE) it is tested against.
    Both return (tokens, token-level aux loss, per-sub-expert token counts).
    """

    def __init__(
        self,
        width: int,
        heads: int,
        hidden: int,
        sub_experts: int,
        sub_top_k: int,
        sub_shared: int,
        use_sub_moe: bool,
        dropout: float = 0.0,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.attn = SelfAttention(width, heads, dropout, backend)
        self.norm1 = nn.LayerNorm(width)
        self.ffn: nn.Module = (
            SubMoE(width, hidden, sub_experts, sub_top_k, sub_shared) if use_sub_moe else SwiGLU(width, hidden)
        )
        self.norm2 = nn.LayerNorm(width)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, aux, counts = self.run_grouped([self], x, one_group(x.shape[0], x.device, valid))
        return y, aux[0], counts[0]

    def reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The expert on one group of rows, unbatched: (output, aux, counts), as ``run_grouped``."""
        h = self.norm1(x + self.attn(x))
        if isinstance(self.ffn, SubMoE):
            f, aux, counts = loop_sub_moe(self.ffn, h)
        else:
            f, aux, counts = self.ffn(h), h.new_zeros((), dtype=torch.float32), h.new_zeros(0, dtype=torch.long)
        return self.norm2(h + f), aux, counts

    @staticmethod
    def run_grouped(
        experts: Sequence["AttentionExpert"], x: torch.Tensor, g: RowGroups
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows x [n, N, D] sorted by expert (``g``), each through its expert: one call per layer for all of
        them. Returns (y [n, N, D], aux [E_local], counts [E_local, E'])."""
        first, attn = experts[0], experts[0].attn
        qkv = grouped_linear(
            x, g, stacked(experts, lambda e: e.attn.qkv.weight), stacked(experts, lambda e: e.attn.qkv.bias)
        )
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=attn.heads)
        out = fused_attention(q, k, v, attn.dropout if first.training else 0.0, attn.backend)
        out = grouped_linear(
            rearrange(out, "b h n d -> b n (h d)"),
            g,
            stacked(experts, lambda e: e.attn.proj.weight),
            stacked(experts, lambda e: e.attn.proj.bias),
        )
        h = grouped_layer_norm(
            x + out,
            g,
            stacked(experts, lambda e: e.norm1.weight),
            stacked(experts, lambda e: e.norm1.bias),
            first.norm1.eps,
        )
        if isinstance(first.ffn, SubMoE):
            f, aux, counts = run_sub_moes([cast(SubMoE, e.ffn) for e in experts], h, g)
        else:
            f = grouped_swiglu([cast(SwiGLU, e.ffn) for e in experts], h, g)
            aux, counts = h.new_zeros(len(experts), dtype=torch.float32), h.new_zeros(len(experts), 0, dtype=torch.long)
        y = grouped_layer_norm(
            h + f,
            g,
            stacked(experts, lambda e: e.norm2.weight),
            stacked(experts, lambda e: e.norm2.bias),
            first.norm2.eps,
        )
        return y, aux, counts
