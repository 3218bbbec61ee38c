"""What may change when a run resumes from its checkpoint, and how the schedule continues afterwards.

A resumed run must be the same run: a change to the model, the data mix, the
batch arithmetic or the optimizer's form would silently train something else
from the old state, so it stops naming the fields. The declared resumable fields
(length, peak lr, cadences, where things live, how they are logged) are applied:
the one-cycle schedule is rebuilt for the new length and lr and continued at the
step reached, i.e. the lr is what the new config would give at that step.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Any, Iterable

import torch
from torch.optim.lr_scheduler import OneCycleLR

from nestor_ds.config.loading import ConfigError
from nestor_ds.engine.optim import position_schedule
from nestor_ds.errors import CheckpointError

log = logging.getLogger(__name__)

RESUMABLE = (
    "train.steps",
    "train.epochs",
    "train.optimizer.lr",
    "train.optimizer.warmup_fraction",
    "train.log_every",
    "train.eval_every",
    "train.eval_trajectories",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.checkpoint_dir",
    "train.output_dir",
    "train.init_from",
    "train.max_bad_steps",
    "train.count_host_syncs",
    "train.on_nonfinite",
    "train.rollback_lr_factor",
    "train.max_rollbacks",
    "train.time_limit_s",
    "data.root",
    "data.datasets.*.shards",
    "data.workers",
    "data.verify_checksums",
    "data.on_bad_sample",
    "data.max_bad_samples",
    "parallel.collective_timeout_s",
    "tracking.*",
    "model.compile",
    "model.attention",
    "model.moe.expert_compute",
)
_SCHEDULE_KEYS = ("max_lr", "initial_lr", "min_lr")


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        items = ((str(i), v) for i, v in enumerate(value))  # data.datasets.0.shards: entries by position
    else:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, sub in items:
        out.update(_leaves(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out


def resumable(key: str) -> bool:
    """Whether a changed config key may differ on resume (schedule, logging; never the model)."""
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in RESUMABLE)


def check_resume(saved: dict[str, Any], current: dict[str, Any], where: str) -> dict[str, tuple[Any, Any]]:
    """The resumable changes ``{field: (old, new)}``; raises ConfigError naming any other changed field."""
    old, new = _leaves(saved), _leaves(current)
    changed = {
        k: (old.get(k, "<absent>"), new.get(k, "<absent>"))
        for k in sorted(old.keys() | new.keys())
        if old.get(k, "<absent>") != new.get(k, "<absent>")
    }
    refused = {k: v for k, v in changed.items() if not resumable(k)}
    if refused:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in refused.items())
        raise ConfigError(
            f"cannot resume from {where}: these fields differ from the checkpoint's config and cannot change "
            f"mid-run: {listed}. Restore them, or start a new run (another train.output_dir, or --no-resume). "
            f"Fields that may change on resume: {', '.join(RESUMABLE)}"
        )
    return changed


def schedule_snapshot(optimizer: torch.optim.Optimizer) -> list[dict[str, float]]:
    """The one-cycle hyperparameters of the current config, taken before a checkpoint's optimizer state
    (which carries the old ones) is loaded."""
    return [{k: group[k] for k in _SCHEDULE_KEYS} for group in optimizer.param_groups]


def continue_schedule(
    scheduler: OneCycleLR, snapshot: list[dict[str, float]], step: int, lr_scale: float = 1.0
) -> None:
    """Put the current config's schedule (its lrs times ``lr_scale``, which rollbacks lower) back over the loaded
    optimizer state and move it to ``step``."""
    groups = scheduler.optimizer.param_groups
    if len(groups) != len(snapshot):
        raise CheckpointError(
            f"the checkpoint's optimizer has {len(groups)} parameter groups, this model {len(snapshot)}"
        )
    if step > scheduler.total_steps:
        raise ConfigError(
            f"the checkpoint is at step {step}, past this config's {scheduler.total_steps} steps: "
            f"raise train.steps (or train.epochs) to continue it"
        )
    for group, hyper in zip(groups, snapshot):
        group.update({k: v * lr_scale for k, v in hyper.items()})
    position_schedule(scheduler, step)
