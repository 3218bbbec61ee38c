"""Parameter accounting: total, active per sample, and held per rank under expert parallelism."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from deepspeed.moe.utils import is_moe_param

from nestor_ds.config.schema import ModelConfig
from nestor_ds.model.expert_parallel import SampleMoE
from nestor_ds.model.registry import build_model
from nestor_ds.model.sub_moe import SubMoE


@dataclass
class ParamReport:
    """Parameter counts of a model: total, active per sample, and per rank at an ep_size."""

    total: int
    active_per_sample: int
    per_rank: int
    dense: int
    per_expert: int

    @property
    def active_share(self) -> float:
        """Share of the parameters one sample uses."""
        return self.active_per_sample / self.total


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_report(cfg: ModelConfig, ep_size: int = 1) -> ParamReport:
    """Counted on a meta-device model (no memory), built with ep_size=1 so every expert is present."""
    with torch.device("meta"):
        model = build_model(cfg, ep_size=1, ep_rank=0)
    total = _count(model)
    dense = sum(p.numel() for p in model.parameters() if not is_moe_param(p))
    active, held, per_expert = dense, dense, 0
    for layer in model.moe_layers:
        experts = layer.deepspeed_moe.experts.deepspeed_experts
        per_expert = _count(experts[0])
        active_one = per_expert
        for sub in experts[0].modules():
            if isinstance(sub, SubMoE):
                routed = sub.w_gate_up.numel() + sub.w_down.numel()
                active_one += -routed + routed * sub.top_k // sub.experts
        active += layer.deepspeed_moe.gate.top_k * active_one
        held += (layer.num_experts // ep_size) * per_expert
    return ParamReport(total, active, held, dense, per_expert)


def published_reference(cfg: ModelConfig) -> tuple[str, int, str] | None:
    """(name, parameter count, note) of the published model this config is, if it is one."""
    from nestor_ds.model.published import NESTOR_REFERENCE_TINY_PARAMS, PUBLISHED

    common = (cfg.grid, cfg.patch_size, cfg.t_in, cfg.t_out, cfg.channels, cfg.n_cls) == ([128, 128], 8, 10, 1, 4, 12)
    if not common:
        return None
    if cfg.variant == "nestor":
        tiny = (cfg.width, cfg.blocks, cfg.afno_blocks, cfg.moe.experts, cfg.sub_moe.experts) == (512, 2, 4, 6, 6)
        note = "its experts lack the attention output projection, D*D + D each"
        return ("reference NESTOR Tiny", NESTOR_REFERENCE_TINY_PARAMS, note) if tiny else None
    for size, p in PUBLISHED[cfg.variant].items():
        shape = (cfg.width, cfg.blocks, cfg.afno_blocks, cfg.mlp_ratio, cfg.decoder_width)
        if shape == tuple(p[k] for k in ("width", "blocks", "afno_blocks", "mlp_ratio", "decoder_width")):
            if "params" in p:
                return f"published {cfg.variant} {size}", p["params"], ""
    return None


def format_param_report(r: ParamReport, cfg: ModelConfig, ep_size: int) -> str:
    """The report as the ``nestor-ds params`` table."""

    def m(n: int) -> str:
        return f"{n:>13,d}  ({n / 1e6:7.2f} M)"

    lines = [
        f"model: {cfg.variant}  grid {cfg.grid}  patch {cfg.patch_size}  width {cfg.width}  "
        f"blocks {cfg.blocks}  ep_size {ep_size}",
        f"total parameters       {m(r.total)}",
        f"active per sample      {m(r.active_per_sample)}",
        f"held per rank          {m(r.per_rank)}",
        f"dense (non-expert)     {m(r.dense)}",
        f"one image-level expert {m(r.per_expert)}",
        f"active share           {r.active_share:14.1%}",
    ]
    ref = published_reference(cfg)
    if ref is not None:
        name, count, note = ref
        lines.append(f"{name:<22} {m(count)}" + (f"  ({note})" if note else "  (equal)" if count == r.total else ""))
    return "\n".join(lines)


__all__ = ["ParamReport", "SampleMoE", "format_param_report", "param_report"]
