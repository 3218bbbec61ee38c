"""Adam over DeepSpeed MoE parameter groups (expert and dense parameters reduce over different groups)."""

from __future__ import annotations

import warnings

import torch
from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer
from torch.optim.lr_scheduler import LRScheduler, OneCycleLR

from nestor_ds.config.schema import OptimizerConfig


def moe_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Every input group needs a unique ``name``; DeepSpeed splits expert parameters out by group name."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    return split_params_into_different_moe_groups_for_optimizer(groups)


def build_optimizer(model: torch.nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """torch's fused Adam: one kernel for all parameters, step counts kept on the device (no per-parameter
    read back to the host), and nothing to compile (DeepSpeed's fused Adam costs ~100 s of JIT on first use)."""
    return torch.optim.Adam(
        moe_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=True
    )


def one_cycle(optimizer: torch.optim.Optimizer, steps: int, warmup_fraction: float) -> OneCycleLR:
    """torch's OneCycleLR (cosine, no momentum cycling) over ``steps``, each group peaking at its own lr.

    torch divides by the length of each phase, so a warm-up of exactly one step (``fraction * steps == 1``:
    5 steps at the default 0.2) or of all steps would divide by zero: the fraction is moved off those points
    by a millionth of a step, which changes no lr it computes."""
    fraction = min(max(warmup_fraction, 1e-6), 1 - 1e-6)
    if abs(fraction * steps - 1) < 1e-6:
        fraction += 1e-6 / steps
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in optimizer.param_groups],
        total_steps=steps,
        pct_start=fraction,
        cycle_momentum=False,
    )


def resize_one_cycle(scheduler: OneCycleLR, steps: int, warmup_fraction: float, step: int) -> None:
    """Give a running one-cycle schedule a new length, keeping its place: its phases become those ``one_cycle``
    builds for ``steps`` and the lr that of the new schedule at ``step``."""
    # the phases depend on the length alone; the lrs (initial, peak, final) stay in the optimizer's groups
    fresh = one_cycle(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), steps, warmup_fraction)
    scheduler.total_steps, scheduler._schedule_phases = fresh.total_steps, fresh._schedule_phases
    position_schedule(scheduler, step)


def position_schedule(scheduler: LRScheduler, step: int) -> None:
    """Move a scheduler to ``step``: every group's lr becomes the schedule's value there."""
    scheduler.last_epoch = step - 1
    with warnings.catch_warnings():  # "step() before optimizer.step()": intended, this only positions it
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()
