"""The engine's ground floor: what a run is asked to do, everything it has built, and how it ended.

``trainer.py`` builds a :class:`RunContext`; ``train_loop.py`` consumes it; neither imports the other.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal

import torch
import yaml

from nestor_ds.config import RunConfig

if TYPE_CHECKING:  # heavy imports only for the type checker: the context is built after they are loaded
    from deepspeed.runtime.engine import DeepSpeedEngine
    from torch.optim.lr_scheduler import OneCycleLR

    from nestor_ds.data.loader import Source, TrainLoader
    from nestor_ds.engine.evaluate import EvalResult
    from nestor_ds.engine.preemption import Preemption
    from nestor_ds.tracking.mlflow_run import Tracker

Mode = Literal["pretrain", "finetune", "evaluate"]


@dataclass
class RunArgs:
    """What the command line asks of one run."""

    config: Path
    ds_config: Path
    mode: Mode = "pretrain"
    weights: Path | None = None  # evaluate / finetune: checkpoint dir or .safetensors (default train.init_from)
    overrides: dict[str, Any] = field(default_factory=dict)
    resume: bool = True


class StopReason(enum.Enum):
    """Why the training loop ended."""

    FINISHED = "finished"  # every planned step ran
    TIME_LIMIT = "time_limit"  # train.time_limit_s passed: a planned end, evaluated and exported like a finish
    PREEMPTED = "preempted"  # a signal: checkpoint written, no evaluation (the job comes back, or was cancelled)


@dataclass(frozen=True)
class Outcome:
    """How the training loop ended: the reason and the last step completed."""

    reason: StopReason
    step: int


class Progress:
    """When the run last moved forward (set up, finished a step): a collective that fails after waiting longer
    than ``parallel.collective_timeout_s`` since then was a timeout, whatever its message says."""

    def __init__(self) -> None:
        self.at = time.monotonic()

    def mark(self) -> None:
        """The run moved forward now."""
        self.at = time.monotonic()

    def idle_s(self) -> float:
        """Seconds since the run last moved forward."""
        return time.monotonic() - self.at


def total_steps(cfg: RunConfig, train_count: int, world: int) -> int:
    """The step budget: ``train.steps``, or ``train.epochs`` over ``train_count`` trajectories at the global batch."""
    if cfg.train.steps is not None:
        return cfg.train.steps
    epochs = cfg.train.epochs or 1  # the config's validator asks for steps or epochs
    per_step = cfg.train.micro_batch_per_rank * cfg.train.grad_accum * world
    return max(1, epochs * math.ceil(train_count / per_step))


@dataclass
class RunContext:
    """Everything the loop and the finish need, built once by ``trainer.build_context``.

    The data is opened once here (``test_sources``, ``train_sources``); the train batches come from
    ``train_loader.restart(batch)`` at the start, after a resume and after a rollback."""

    args: RunArgs
    cfg: RunConfig
    rank: int
    world: int
    ds: dict[str, Any]  # the DeepSpeed config as derived for this world size
    engine: DeepSpeedEngine
    tracker: Tracker
    test_sources: list[Source]
    progress: Progress
    train_sources: list[Source] = field(default_factory=list)
    train_loader: TrainLoader | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: OneCycleLR | None = None
    preemption: Preemption | None = None
    steps: int = 0  # the planned total (train.fit_steps_to_time may re-plan it once, from a measured step time)
    step: int = 0  # steps completed
    history: list[dict[str, float]] = field(default_factory=list)
    schedule: list[dict[str, float]] = field(default_factory=list)  # the config's one-cycle lrs per group
    lr_scale: float = 1.0  # lowered by each rollback (train.on_nonfinite), kept in checkpoints

    @property
    def out_dir(self) -> Path:
        """The run's output folder (``train.output_dir``)."""
        return self.cfg.train.output_dir

    @property
    def ckpt_dir(self) -> Path:
        """Where the run's DeepSpeed checkpoints live."""
        return self.cfg.checkpoint_dir

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """The train batches from the current step on (the sources stay open; nothing is read again)."""
        if self.train_loader is None:
            raise RuntimeError("this run has no train split (evaluate mode)")
        return self.train_loader.restart(self.step * self.cfg.train.grad_accum)

    def log_config(self) -> None:
        """The config as run (overrides applied) beside the files it came from."""
        resolved = self.out_dir / "config.resolved.yaml"
        resolved.write_text(yaml.safe_dump(self.cfg.model_dump(mode="json"), sort_keys=False))
        for f in (resolved, self.args.config, self.args.ds_config):
            self.tracker.log_artifact(Path(f), "config")


def evaluate_run(ctx: RunContext) -> EvalResult:
    """L2RE of the engine's model on the test sources (one step and rollout, beside the baselines)."""
    from nestor_ds.engine.evaluate import evaluate

    engine = ctx.engine
    engine.eval()
    dtype = torch.bfloat16 if engine.bfloat16_enabled() else torch.float32
    return evaluate(engine, ctx.cfg, ctx.test_sources, ctx.rank, ctx.world, engine.device, dtype)
