"""NESTOR and its baselines: encoder, AFNO, attention experts, Sub-MoE, expert-parallel image MoE."""

from nestor_ds.model.output import ModelOutput
from nestor_ds.model.registry import MODELS, build_model

__all__ = ["MODELS", "ModelOutput", "build_model"]
