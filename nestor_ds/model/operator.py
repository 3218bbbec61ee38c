"""The neural operator shared by all variants: DPOT's encoder, a stack of blocks, DPOT's head."""

from __future__ import annotations

import torch
from torch import nn

from nestor_ds.config.schema import ModelConfig, RunConfig
from nestor_ds.model.encoder import DatasetClassifier, OutputHead, SpatioTemporalEncoder
from nestor_ds.model.expert_parallel import SampleMoE
from nestor_ds.model.moe_stats import reduce_moe_stats
from nestor_ds.model.output import ModelOutput


class NeuralOperator(nn.Module):
    """[B, *space, T_in, C] -> ModelOutput with pred [B, *space, T_out, C] and MoE statistics (2-D or 3-D)."""

    def __init__(self, cfg: ModelConfig, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SpatioTemporalEncoder(cfg)
        self.blocks = nn.ModuleList(blocks)
        if cfg.compile:
            for block in self.blocks:
                block.compile()  # in place: parameter names, checkpoints and DeepSpeed's hooks stay as they are
        self.cls_head = DatasetClassifier(cfg.width, cfg.n_cls) if cfg.n_cls else None
        self.head = OutputHead(cfg.width, cfg.decoder_width, cfg.patch, cfg.channels, cfg.t_out, cfg.dims)
        self.temperature = cfg.moe.temperature_at(0)
        self.run_config: RunConfig | None = None  # set by load_model: what the model was trained with
        self.channel_names: dict[str, list[str]] = {}  # set by load_model: channel names per training data set
        self.set_stats: dict[str, dict[str, list[float]]] = {}  # set by load_model: train-split mean/std per set

    @property
    def moe_layers(self) -> list[SampleMoE]:
        """The image-level MoE layers, for the aux losses and load statistics."""
        return [m for m in self.modules() if isinstance(m, SampleMoE)]

    def set_temperature(self, value: float) -> None:
        """Set every router's softmax temperature."""
        self.temperature = value
        for layer in self.moe_layers:
            layer.set_temperature(value)

    def set_step(self, n: int) -> float:
        """Router temperature after ``n`` schedule units (see ``moe.temperature_unit``); returns it."""
        self.set_temperature(self.cfg.moe.temperature_at(n))
        return self.temperature

    def forward(self, x: torch.Tensor) -> ModelOutput:
        c = self.cfg
        if x.dim() != c.dims + 3 or tuple(x.shape[-2:]) != (c.t_in, c.channels):
            axes = ", ".join("XYZ"[: c.dims])
            raise ValueError(
                f"expected input [B, {axes}, t_in={c.t_in}, channels={c.channels}] for a {c.dims}-D model, "
                f"got {tuple(x.shape)}"
            )
        if list(x.shape[1:-2]) != c.grid:
            raise ValueError(f"input grid {list(x.shape[1:-2])} differs from model.grid={c.grid}")
        z, stats = self.encoder(x)
        for block in self.blocks:
            z = block(z)
        pred = self.head(z)
        if stats is not None:
            mu, sigma = stats
            pred = pred * sigma + (0 if c.residual else mu)
        if c.residual:  # a change from the last input frame
            pred = pred + x[..., -1:, :].to(pred.dtype)
        out = reduce_moe_stats(self.moe_layers, pred, c.ablation.load_balancing, c.moe.balance_loss or "switch")
        if self.cls_head is not None:
            out.extras["cls_logits"] = self.cls_head(z)
        return out
