"""Pre-training, fine-tuning and evaluation of one run on DeepSpeed (any launcher, any world size).

:func:`run` builds a :class:`~nestor_ds.engine.context.RunContext`, hands it to the training loop (or
evaluates), and finishes: one exit path, the MLflow record closed in every case."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch

from nestor_ds.config import RunConfig, build_deepspeed_config, load_config
from nestor_ds.engine.context import (
    Outcome,
    Progress,
    RunArgs,
    RunContext,
    StopReason,
    evaluate_run,
    total_steps,
)
from nestor_ds.engine.train_loop import train_loop
from nestor_ds.errors import CheckpointError, RunStopped

if TYPE_CHECKING:
    from deepspeed.runtime.engine import DeepSpeedEngine
    from torch.optim.lr_scheduler import OneCycleLR

    from nestor_ds.data.loader import Source
    from nestor_ds.engine.preemption import Preemption
    from nestor_ds.model.operator import NeuralOperator
    from nestor_ds.tracking.mlflow_run import Tracker

log = logging.getLogger("nestor_ds")
__all__ = ["RunArgs", "run", "total_steps"]


def _setup_logging(rank: int) -> None:
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        stream=sys.stdout,
        format=f"%(asctime)s [rank {rank}] %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(args: RunArgs) -> dict[str, Any]:
    """One run, with one exit path: setup, the training loop (or an evaluation), finish.

    The run holds its output directory (one run per directory); its MLflow record ends FAILED when it
    dies of an exception (KILLED on preemption); a collective that timed out names the silent ranks."""
    from nestor_ds.engine.distributed import shutdown
    from nestor_ds.engine.run_lock import RunLock

    cfg = load_config(args.config, args.overrides)  # a bad config fails before any process group starts
    lock = RunLock(cfg.train.output_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        lock.acquire()  # before any process group: a refused run ends at once, and its launcher stops the others
    progress = Progress()
    try:
        ctx = build_context(args, cfg, progress)
        try:
            summary = _evaluate_only(ctx) if args.mode == "evaluate" else _finish(ctx, train_loop(ctx))
        except BaseException:
            ctx.tracker.finish("FAILED")  # no-op for one already finished
            raise
        shutdown()
        return summary
    except BaseException as err:
        explained = _explained(err, cfg, progress)
        if explained is err:
            raise
        raise explained from err
    finally:
        lock.release()


def _explained(err: BaseException, cfg: RunConfig, progress: Progress) -> BaseException:
    """A collective timeout becomes a RunStopped naming the ranks that went silent; anything else as is.

    A timeout is told by its type and its timing, not its wording: torch's ``DistError`` family (NCCL), or
    the plain ``RuntimeError`` gloo raises, after the run stood still for ``parallel.collective_timeout_s``."""
    import torch.distributed as dist

    distributed_error = isinstance(err, dist.DistError) or type(err) is RuntimeError
    if not distributed_error or progress.idle_s() < cfg.parallel.collective_timeout_s:
        return err
    from nestor_ds.engine.distributed import Heartbeat

    beats = Heartbeat(cfg.train.output_dir / "heartbeat", 0, int(os.environ.get("WORLD_SIZE", "1")))
    return RunStopped(
        f"a collective timed out after {cfg.parallel.collective_timeout_s:g} s "
        f"(parallel.collective_timeout_s): {beats.laggards()}"
    )


def build_context(args: RunArgs, cfg: RunConfig, progress: Progress) -> RunContext:
    """Process group, model, DeepSpeed engine, data sources, resume, MLflow run: nothing trained yet."""
    from nestor_ds.engine.preemption import Preemption

    preemption = Preemption()  # first: a signal that arrives before the handler would kill the task
    import torch.distributed as dist

    from nestor_ds.data.loader import open_sources
    from nestor_ds.engine.distributed import init_distributed
    from nestor_ds.model import build_model

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline clusters: no 1 s timeouts per call
    init_distributed(timeout_s=cfg.parallel.collective_timeout_s)
    rank, world = dist.get_rank(), dist.get_world_size()
    _setup_logging(rank)
    if args.mode == "evaluate" and world % cfg.parallel.ep_size:
        # consolidated weights load into any ep_size: evaluate with the experts spread over the ranks at hand
        log.info(
            "evaluate: parallel.ep_size=%d does not divide world size %d; using ep_size=%d",
            cfg.parallel.ep_size,
            world,
            math.gcd(world, cfg.parallel.ep_size),
        )
        cfg = load_config(args.config, {**args.overrides, "parallel.ep_size": math.gcd(world, cfg.parallel.ep_size)})
    ds = build_deepspeed_config(cfg, args.ds_config, world)
    _seed_everything(cfg.train.seed)

    model = build_model(cfg.model, cfg.parallel.ep_size, seed=cfg.train.seed)
    if cfg.model.compile:
        log.info(
            "model.compile: %d blocks compiled by torch.compile; the first steps include compilation", len(model.blocks)
        )
    weights = _load_weights(args, cfg, model)
    started = _Started(args, cfg, rank, world, ds, model, open_sources(cfg, cfg.data.test_split), progress)
    if args.mode == "evaluate":
        return _evaluate_context(started, weights)
    return _train_context(started, preemption)


@dataclass
class _Started:
    """What every run has built before its own part: config, ranks, DeepSpeed config, model and test data."""

    args: RunArgs
    cfg: RunConfig
    rank: int
    world: int
    ds: dict[str, Any]
    model: NeuralOperator
    test_sources: list[Source]
    progress: Progress

    def context(self, engine: DeepSpeedEngine, tracker: Tracker, **train: Any) -> RunContext:
        """The run's context around ``engine`` and ``tracker`` (``train``: the training parts)."""
        return RunContext(
            self.args,
            self.cfg,
            self.rank,
            self.world,
            self.ds,
            engine,
            tracker,
            self.test_sources,
            self.progress,
            **train,
        )


def _load_weights(args: RunArgs, cfg: RunConfig, model: NeuralOperator) -> Path | None:
    """Fine-tuning and evaluation start from weights (frozen parts, final routing temperature); pre-training
    from the seed."""
    from nestor_ds.engine.finetune import Adaptation, default_freeze, freeze, load_pretrained

    weights = args.weights or cfg.train.init_from
    if args.mode in ("finetune", "evaluate"):
        if weights is None:
            raise CheckpointError(f"{args.mode} needs weights: pass --weights or set train.init_from")
        tune = args.mode == "finetune"
        adapt = Adaptation(cfg.train.adapt_pos_embed, cfg.train.adapt_time_agg) if tune else None
        fresh = load_pretrained(model, weights, cfg.train.init_2d_to_3d if tune else None, adapt)
        if args.mode == "evaluate" and fresh:
            raise CheckpointError(f"{weights} does not fit the model of {args.config}: {fresh[:4]} ...")
    frozen_parts = default_freeze(cfg.model.variant, cfg.train.freeze) if args.mode == "finetune" else []
    if frozen_parts:
        log.info("frozen: %s (%d parameters)", ", ".join(frozen_parts), freeze(model, frozen_parts))
    if args.mode != "pretrain" and cfg.model.is_moe:
        # fine-tuning and evaluation route at the schedule's final temperature, as MoE-POT does
        model.set_temperature(cfg.model.moe.final_temperature)
    return weights


def _evaluate_context(s: _Started, weights: Path | None) -> RunContext:
    import deepspeed

    cfg, world = s.cfg, s.world
    engine, _, _, _ = deepspeed.initialize(model=s.model, config=s.ds)
    ctx = s.context(engine, _tracker(s.args, cfg, s.rank, world))
    if s.rank == 0:
        with _closed_on_error(ctx.tracker):
            ctx.tracker.log_params(
                {
                    "config": cfg.model_dump(mode="json"),
                    "world_size": world,
                    "ep_size": cfg.parallel.ep_size,
                    "weights": str(weights),
                }
            )
            ctx.log_config()
    return ctx


def _train_context(s: _Started, preemption: Preemption) -> RunContext:
    import deepspeed

    from nestor_ds.data.loader import TrainLoader, open_sources
    from nestor_ds.data.shards import SHARD_CHECKS
    from nestor_ds.engine.optim import build_optimizer, one_cycle
    from nestor_ds.engine.resume import schedule_snapshot

    args, cfg, rank, world, model = s.args, s.cfg, s.rank, s.world, s.model
    train_sources = open_sources(cfg, cfg.data.train_split)
    shards = sum(len(src.manifest["shards"]) for src in (*train_sources, *s.test_sources))
    log.info(
        "data: %d manifests read, %d shards there at their sizes; each shard's sha256 is checked when a process "
        "first opens it (%d bytes hashed before step 1)",
        len(train_sources) + len(s.test_sources),
        shards,
        SHARD_CHECKS.bytes_hashed,
    )
    steps = total_steps(cfg, sum(s.manifest["count"] for s in train_sources), world)
    optimizer = build_optimizer(model, cfg.train.optimizer)
    scheduler = one_cycle(optimizer, steps, cfg.train.optimizer.warmup_fraction)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=s.ds)
    schedule = schedule_snapshot(optimizer)  # this config's, before a checkpoint's optimizer state replaces it
    client, changes = _resume(cfg, engine, scheduler, schedule) if args.resume else (None, {})
    tracker = _tracker(args, cfg, rank, world, client.get("mlflow_run_id") if client else None)
    ctx = s.context(
        engine,
        tracker,
        train_sources=train_sources,
        train_loader=TrainLoader(cfg, train_sources, rank, world),
        optimizer=optimizer,
        scheduler=scheduler,
        preemption=preemption,
        steps=steps,
        schedule=schedule,
    )
    if client is not None:
        ctx.step = int(client["step"])
        ctx.lr_scale = float(client.get("lr_scale", 1.0))
        log.info("resumed from %s at step %d of %d", cfg.checkpoint_dir / client["tag"], ctx.step, steps)
    if rank == 0:
        with _closed_on_error(tracker):
            _log_start(ctx, client is None, changes)
    return ctx


def _log_start(ctx: RunContext, fresh: bool, changes: dict[str, tuple[Any, Any]]) -> None:
    """Parameters of a fresh run, or the config changes a resume applied."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    cfg, world = ctx.cfg, ctx.world
    if fresh:
        ctx.tracker.log_params(
            {
                "config": cfg.model_dump(mode="json"),
                "ds_config": ctx.ds,
                "world_size": world,
                "ep_size": cfg.parallel.ep_size,
                "mode": ctx.args.mode,
                "total_steps": ctx.steps,
            }
        )
        ctx.log_config()
    elif changes:
        prefix = f"resumed_at_step_{ctx.step}"
        ctx.tracker.log_params(
            {f"{prefix}/{k}": f"{a} -> {b}" for k, (a, b) in changes.items()} | {f"{prefix}/total_steps": ctx.steps}
        )
        ctx.log_config()


@contextmanager
def _closed_on_error(tracker: Tracker) -> Iterator[None]:
    """Within: an exception ends the tracker's run FAILED before it propagates (the context is not built yet)."""
    try:
        yield
    except BaseException:
        tracker.finish("FAILED")
        raise


def _tracker(args: RunArgs, cfg: RunConfig, rank: int, world: int, run_id: str | None = None) -> Tracker:
    from nestor_ds.tracking import Tracker, resolve_uri
    from nestor_ds.tracking.provenance import provenance

    enabled = rank == 0 and cfg.tracking.enabled
    device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    tags = {"mode": args.mode, **provenance(world, cfg.parallel.ep_size, device_name)} if enabled else {}
    if enabled and cfg.tracking.parent_run_id:
        tags["mlflow.parentRunId"] = cfg.tracking.parent_run_id  # shown nested under it in the MLflow UI
    return Tracker(
        resolve_uri(cfg.tracking.uri, cfg.train.output_dir),
        cfg.tracking.experiment,
        cfg.tracking.run_name,
        cfg.train.output_dir / "mlflow-artifacts",
        enabled=enabled,
        tags=tags,
        run_id=run_id,
    )


def _resume(
    cfg: RunConfig, engine: DeepSpeedEngine, scheduler: OneCycleLR, schedule: list[dict[str, float]]
) -> tuple[dict[str, Any] | None, dict[str, tuple[Any, Any]]]:
    """Load the newest intact checkpoint, if any, after checking its config against this one; the current
    config's schedule (times the lr scale of earlier rollbacks) continues from the step reached."""
    from nestor_ds.engine import checkpointing
    from nestor_ds.engine.resume import check_resume, continue_schedule

    changes: dict[str, tuple[Any, Any]] = {}

    def check(saved: dict[str, Any], where: str) -> None:
        changes.update(check_resume(saved, cfg.model_dump(mode="json"), where))
        for key, (old, new) in changes.items():
            log.info("resume: %s changed from %r to %r (applied)", key, old, new)

    client = checkpointing.load(engine, cfg.checkpoint_dir, check)
    if client is not None:
        continue_schedule(scheduler, schedule, int(client["step"]), float(client.get("lr_scale", 1.0)))
    return client, changes


def _evaluate_only(ctx: RunContext) -> dict[str, Any]:
    from nestor_ds.engine.evaluate import format_table
    from nestor_ds.engine.reporting import write_eval_outputs

    result = evaluate_run(ctx)
    summary = result.metrics()
    if ctx.rank == 0:
        print(format_table(result), flush=True)
        write_eval_outputs(result, ctx.out_dir / "eval", ctx.tracker, step=0)
        ctx.tracker.log_metrics(summary, step=0)
    ctx.tracker.finish()
    return summary


def _finish(ctx: RunContext, outcome: Outcome) -> dict[str, Any]:
    """After the loop: on preemption only the MLflow status; otherwise the final evaluation, summary and the
    exported model."""
    if outcome.reason is StopReason.PREEMPTED:
        ctx.tracker.finish("KILLED")
        return {"preempted_at": outcome.step}
    from nestor_ds.engine.evaluate import format_table
    from nestor_ds.engine.reporting import write_eval_outputs
    from nestor_ds.tracking import resolve_uri

    result = evaluate_run(ctx)
    summary = {**(ctx.history[-1] if ctx.history else {}), **result.metrics()}
    if ctx.rank == 0:
        uri = resolve_uri(ctx.cfg.tracking.uri, ctx.out_dir)
        print(format_table(result), flush=True)
        write_eval_outputs(result, ctx.out_dir / "eval", ctx.tracker, outcome.step, history=ctx.history)
        ctx.tracker.log_metrics(result.metrics(), outcome.step)
        (ctx.out_dir / "summary.json").write_text(
            json.dumps(
                {
                    **summary,
                    "mlflow_uri": uri,
                    "mlflow_run_id": ctx.tracker.run_id,
                    "mode": ctx.args.mode,
                    "stop_reason": outcome.reason.value,
                    "steps_planned": ctx.steps,
                    "datasets": [s.name for s in ctx.test_sources],
                },
                indent=1,
            )
        )
        print(f"outputs: {ctx.out_dir.resolve()}  (mlflow: {uri}, run {ctx.tracker.run_id})", flush=True)
        from nestor_ds.inference.model_io import export_model

        model_dir = export_model(ctx.ckpt_dir, ctx.out_dir / "model")  # the final checkpoint as a loadable folder
        ctx.tracker.log_artifact(model_dir, "model")  # the MLflow UI leads from the run to its weights
        print(f"model: {model_dir.resolve()}  (nestor_ds.load_model / nestor-ds predict --model)", flush=True)
    ctx.tracker.finish()
    return summary
