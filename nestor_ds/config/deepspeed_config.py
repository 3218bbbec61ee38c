"""Derive the final DeepSpeed config from a run config, a ds_configs/ JSON and the world size.

This is the one place where batch arithmetic, precision, ZeRO stage and expert
parallelism are checked against each other and against the world size.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from nestor_ds.config.loading import ConfigError, parse_json_object
from nestor_ds.config.schema import RunConfig

_PRECISION_KEYS = {"bf16": "bf16", "fp16": "fp16"}


def read_ds_json(path: str | Path) -> dict[str, Any]:
    """A DeepSpeed JSON file (shipped names resolve to the package's copies) as a dict."""
    from nestor_ds.config.shipped import resolve_shipped

    path = resolve_shipped(path)
    if not path.is_file():
        raise ConfigError(f"DeepSpeed config {path} does not exist")
    return parse_json_object(path.read_text(), f"DeepSpeed config {path}")


def _json_precision(ds: dict[str, Any]) -> str:
    on = [name for name, key in _PRECISION_KEYS.items() if ds.get(key, {}).get("enabled", False)]
    if len(on) > 1:
        raise ConfigError(f"DeepSpeed config enables both {on[0]} and {on[1]}")
    return on[0] if on else "fp32"


def engine_clips_itself(ds: dict[str, Any]) -> bool:
    """True where DeepSpeed's own clipping is off and the project clips (ZeRO stage 0)."""
    return int(ds.get("zero_optimization", {}).get("stage", 0)) == 0


def build_deepspeed_config(cfg: RunConfig, ds_json: dict[str, Any] | str | Path, world_size: int) -> dict[str, Any]:
    """Return the DeepSpeed config dict for this run, or raise ConfigError naming the fault."""
    source = str(ds_json) if not isinstance(ds_json, dict) else "<dict>"
    ds = copy.deepcopy(ds_json) if isinstance(ds_json, dict) else read_ds_json(ds_json)
    if world_size < 1:
        raise ConfigError(f"world size must be at least 1, got {world_size}")

    ep = cfg.parallel.ep_size
    if world_size % ep:
        raise ConfigError(f"world size {world_size} is not divisible by parallel.ep_size={ep}")
    if cfg.model.is_moe and cfg.model.moe.experts % ep:
        raise ConfigError(f"model.moe.experts={cfg.model.moe.experts} is not divisible by parallel.ep_size={ep}")
    if not cfg.model.is_moe and ep != 1:
        raise ConfigError(f"parallel.ep_size={ep} needs an MoE model, but model.variant={cfg.model.variant!r}")

    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise ConfigError(
                f"{source}: remove {key!r}; the optimizer and one-cycle schedule come from the run "
                f"config's train section (they need MoE parameter groups)"
            )

    zero = ds.setdefault("zero_optimization", {})
    json_stage = int(zero.get("stage", 0))
    stage = cfg.parallel.zero_stage if cfg.parallel.zero_stage is not None else json_stage
    if "stage" in zero and cfg.parallel.zero_stage is not None and json_stage != cfg.parallel.zero_stage:
        raise ConfigError(
            f"{source} sets zero_optimization.stage={json_stage} but parallel.zero_stage={cfg.parallel.zero_stage}"
        )
    if stage == 3 and cfg.model.is_moe:
        raise ConfigError("ZeRO stage 3 is not supported with MoE models (DeepSpeed MoE needs stage 0, 1 or 2)")
    zero["stage"] = stage

    json_prec = _json_precision(ds)
    prec = cfg.parallel.precision or json_prec
    if cfg.parallel.precision is not None and json_prec != cfg.parallel.precision:
        raise ConfigError(f"{source} selects precision {json_prec} but parallel.precision={cfg.parallel.precision}")
    for name, key in _PRECISION_KEYS.items():
        ds.setdefault(key, {})["enabled"] = prec == name

    micro, accum = cfg.train.micro_batch_per_rank, cfg.train.grad_accum
    total = micro * accum * world_size
    wanted = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "train_batch_size": total,
    }
    for key, value in wanted.items():
        if key in ds and ds[key] != "auto" and int(ds[key]) != value:
            raise ConfigError(
                f"batch sizes do not add up: {source} sets {key}={ds[key]}, but train.micro_batch_per_rank={micro}"
                f" x train.grad_accum={accum} x world size {world_size} gives {key}={value}"
            )
        ds[key] = value

    # ZeRO-0 fp32 clipping in DeepSpeed averages per-rank norms, wrong once experts are sharded;
    # there the engine clips with nestor_ds.engine.grad_norm.clip_global_grad_norm_ instead.
    ds["gradient_clipping"] = 0.0 if engine_clips_itself(ds) else cfg.train.grad_clip
    if prec == "bf16" and stage > 0:
        # bf16 ZeRO skips a step with a non-finite gradient norm only when asked (fp32 ZeRO always does)
        ds["bf16"].setdefault("check_grad_overflow", True)
    ds.setdefault("steps_per_print", 10**9)  # the engine prints its own progress
    return ds
