"""Pre-training, fine-tuning and evaluation of one run on DeepSpeed (any launcher, any world size)."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml

from nestor_ds.config import RunConfig, build_deepspeed_config, load_config
from nestor_ds.config.deepspeed_config import engine_clips_itself

log = logging.getLogger("nestor_ds")
Mode = Literal["pretrain", "finetune", "evaluate"]


@dataclass
class RunArgs:
    config: Path
    ds_config: Path
    mode: Mode = "pretrain"
    weights: Path | None = None  # evaluate / finetune: checkpoint dir or .safetensors (default train.init_from)
    overrides: dict[str, Any] = field(default_factory=dict)
    resume: bool = True


def _setup_logging(rank: int) -> None:
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stdout,
                        format=f"%(asctime)s [rank {rank}] %(message)s", datefmt="%H:%M:%S", force=True)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def total_steps(cfg: RunConfig, train_count: int, world: int) -> int:
    if cfg.train.steps is not None:
        return cfg.train.steps
    per_step = cfg.train.micro_batch_per_rank * cfg.train.grad_accum * world
    return max(1, cfg.train.epochs * math.ceil(train_count / per_step))


def add_noise(x: torch.Tensor, mask: torch.Tensor, scale: float, gen: torch.Generator,
              norm: str = "l2") -> torch.Tensor:
    """Denoising pre-training noise on x [B, X, Y, T, C].

    ``l2`` (DPOT): ``scale * ||x||`` with the L2 norm per sample and channel over X, Y, T,
    added at every point and channel. ``rms``: ``scale * RMS(x)`` per sample, real points only.
    """
    if scale <= 0:
        return x
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float32, device=x.device)  # made on the device
    if norm == "l2":
        l2 = x.float().square().sum(dim=(1, 2, 3), keepdim=True).sqrt()  # [B, 1, 1, 1, C]
        return x + (scale * l2 * noise).to(x.dtype)
    rms = x.float().square().flatten(1).mean(1).sqrt().view(-1, 1, 1, 1, 1)
    return x + (scale * rms * noise * mask).to(x.dtype)


def training_loss(cfg: RunConfig, out: Any, per_sample: torch.Tensor, dataset_id: torch.Tensor) -> torch.Tensor:
    """Data term plus weighted aux terms, reduced as ``train.loss_reduction`` says (README: loss reduction)."""
    t = cfg.train
    aux_image, aux_token = out.aux_losses(t.loss_reduction)
    data = per_sample.sum() if t.loss_reduction == "reference" else per_sample.mean()
    loss = data + t.aux_weight_image * aux_image + t.aux_weight_token * aux_token
    if t.cls_weight > 0 and "cls_logits" in out.extras:
        ce = torch.nn.functional.cross_entropy(out.extras["cls_logits"].float(), dataset_id,
                                               reduction="sum" if t.loss_reduction == "reference" else "mean")
        loss = loss + t.cls_weight * ce
    return loss


def run(args: RunArgs) -> dict[str, Any]:
    """A run that holds its output directory (one run per directory), and whose MLflow record ends FAILED when
    it dies of an exception (KILLED on preemption)."""
    from nestor_ds.engine.run_lock import RunLock

    trackers: list[Any] = []
    cfg = load_config(args.config, args.overrides)  # a bad config fails before any process group starts
    lock = RunLock(cfg.train.output_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        lock.acquire()  # before any process group: a refused run ends at once, and its launcher stops the others
    try:
        return _run(args, cfg, trackers)
    except BaseException as err:
        for tracker in trackers:
            tracker.finish("FAILED")  # no-op for one already finished
        if isinstance(err, RuntimeError) and "timed out" in str(err).lower():
            from nestor_ds.engine.distributed import Heartbeat

            beats = Heartbeat(cfg.train.output_dir / "heartbeat", 0, int(os.environ.get("WORLD_SIZE", "1")))
            from nestor_ds.engine.stopped import RunStopped

            raise RunStopped(f"a collective timed out after {cfg.parallel.collective_timeout_s:g} s "
                             f"(parallel.collective_timeout_s): {beats.laggards()}") from err
        raise
    finally:
        lock.release()


def _run(args: RunArgs, cfg: RunConfig, trackers: list[Any]) -> dict[str, Any]:
    from nestor_ds.engine.preemption import Preemption, requeue_job

    preemption = Preemption()  # first: a signal that arrives before the handler would kill the task
    import deepspeed
    import torch.distributed as dist

    from nestor_ds.data.loader import build_train_loader, open_sources
    from nestor_ds.engine import checkpointing
    from nestor_ds.engine.distributed import Heartbeat, init_distributed, shutdown
    from nestor_ds.engine.finite_guard import FiniteGuard
    from nestor_ds.engine.evaluate import format_table
    from nestor_ds.engine.finetune import default_freeze, freeze, load_pretrained
    from nestor_ds.engine.grad_norm import clip_global_grad_norm_
    from nestor_ds.engine.losses import l2re
    from nestor_ds.engine.metrics import IntervalMetrics, peak_memory_mib
    from nestor_ds.engine.optim import build_optimizer
    from nestor_ds.engine.reporting import write_eval_outputs
    from nestor_ds.model import build_model
    from nestor_ds.model.benchmark import count_host_syncs
    from nestor_ds.tracking import Tracker, resolve_uri
    from nestor_ds.tracking.provenance import provenance

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline clusters: no 1 s timeouts per call
    init_distributed(timeout_s=cfg.parallel.collective_timeout_s)
    rank, world = dist.get_rank(), dist.get_world_size()
    _setup_logging(rank)
    if args.mode == "evaluate" and world % cfg.parallel.ep_size:
        # consolidated weights load into any ep_size: evaluate with the experts spread over the ranks at hand
        log.info("evaluate: parallel.ep_size=%d does not divide world size %d; using ep_size=%d",
                 cfg.parallel.ep_size, world, math.gcd(world, cfg.parallel.ep_size))
        cfg = load_config(args.config, {**args.overrides, "parallel.ep_size": math.gcd(world, cfg.parallel.ep_size)})
    ds = build_deepspeed_config(cfg, args.ds_config, world)
    out_dir = cfg.train.output_dir
    ckpt_dir = cfg.checkpoint_dir
    _seed_everything(cfg.train.seed)

    model = build_model(cfg.model, cfg.parallel.ep_size, seed=cfg.train.seed)
    if cfg.model.compile:
        log.info("model.compile: %d blocks compiled by torch.compile; the first steps include compilation",
                 len(model.blocks))
    weights = args.weights or cfg.train.init_from
    if args.mode in ("finetune", "evaluate"):
        if weights is None:
            raise ValueError(f"{args.mode} needs weights: pass --weights or set train.init_from")
        fresh = load_pretrained(model, weights)
        if args.mode == "evaluate" and fresh:
            raise ValueError(f"{weights} does not fit the model of {args.config}: {fresh[:4]} ...")
    frozen_parts = default_freeze(cfg.model.variant, cfg.train.freeze) if args.mode == "finetune" else []
    if frozen_parts:
        log.info("frozen: %s (%d parameters)", ", ".join(frozen_parts), freeze(model, frozen_parts))
    if args.mode != "pretrain" and cfg.model.is_moe:
        # fine-tuning and evaluation route at the schedule's final temperature, as MoE-POT does
        model.set_temperature(cfg.model.moe.final_temperature)

    def make_tracker(run_id: str | None = None) -> Tracker:
        enabled = rank == 0 and cfg.tracking.enabled
        device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        tags = {"mode": args.mode, **provenance(world, cfg.parallel.ep_size, device_name)} if enabled else {}
        tracker = Tracker(resolve_uri(cfg.tracking.uri, out_dir), cfg.tracking.experiment, cfg.tracking.run_name,
                          out_dir / "mlflow-artifacts", enabled=enabled, tags=tags, run_id=run_id)
        trackers.append(tracker)
        return tracker

    def log_config(tracker: Tracker) -> None:
        """The config as run (overrides applied) beside the files it came from."""
        resolved = out_dir / "config.resolved.yaml"
        resolved.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        for f in (resolved, args.config, args.ds_config):
            tracker.log_artifact(Path(f), "config")

    test_sources = open_sources(cfg, cfg.data.test_split)
    names = [s.name for s in test_sources]

    if args.mode == "evaluate":
        engine, _, _, _ = deepspeed.initialize(model=model, config=ds)
        tracker = make_tracker()
        result = _evaluate(engine, cfg, test_sources, rank, world)
        summary = result.metrics()
        if rank == 0:
            print(format_table(result), flush=True)
            write_eval_outputs(result, out_dir / "eval", tracker, step=0)
            tracker.log_params({"config": cfg.model_dump(mode="json"), "world_size": world,
                                "ep_size": cfg.parallel.ep_size, "weights": str(weights)})
            log_config(tracker)
            tracker.log_metrics(summary, step=0)
        tracker.finish()
        shutdown()
        return summary

    train_sources = open_sources(cfg, cfg.data.train_split)
    steps = total_steps(cfg, sum(s.manifest["count"] for s in train_sources), world)
    optimizer = build_optimizer(model, cfg.train.optimizer)
    o = cfg.train.optimizer
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=steps,
        pct_start=max(o.warmup_fraction, 1e-6), cycle_momentum=False)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds)
    device = engine.device
    dtype = torch.bfloat16 if engine.bfloat16_enabled() else torch.float16 if engine.fp16_enabled() else torch.float32

    step = 0
    client = checkpointing.load(engine, ckpt_dir) if args.resume else None
    tracker = make_tracker(client.get("mlflow_run_id") if client else None)
    if client is not None:
        step = int(client["step"])
        log.info("resumed from %s at step %d", ckpt_dir / checkpointing.latest_tag(ckpt_dir), step)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        if client is None:
            tracker.log_params({"config": cfg.model_dump(mode="json"), "ds_config": ds, "world_size": world,
                                "ep_size": cfg.parallel.ep_size, "mode": args.mode, "total_steps": steps})
            log_config(tracker)
    accum = cfg.train.grad_accum
    anneal = args.mode == "pretrain" and cfg.model.is_moe
    loader = iter(build_train_loader(cfg, rank, world, start_batch=step * accum))
    metrics = IntervalMetrics([s.name for s in train_sources], cfg.parallel.ep_size, device,
                              drop_share=cfg.model.is_moe and cfg.model.moe.drop_tokens)
    tokens_per_sample = cfg.model.tokens
    clip_here = engine_clips_itself(ds)
    from tqdm import tqdm

    bar = None
    if rank == 0:
        # a bar only on a terminal: in batch logs the per-interval lines say the same without redraw debris
        bar = tqdm(total=steps, initial=step, desc=args.mode, unit="step", dynamic_ncols=True, file=sys.stderr,
                   disable=not sys.stderr.isatty())
    history: list[dict[str, float]] = []
    host_syncs: dict[str, int] = {}

    def save_checkpoint() -> None:
        client_state = {"step": step, "config": cfg.model_dump(mode="json"), "mlflow_run_id": tracker.run_id}
        checkpointing.save(engine, ckpt_dir, step, client_state, cfg.train.keep_checkpoints)

    heartbeat = Heartbeat(out_dir / "heartbeat", rank, world).start()
    guard = FiniteGuard(cfg.train.max_bad_steps)
    heartbeat.beat(step)
    t_interval = time.perf_counter()
    engine.train()
    while step < steps:
        for micro in range(accum):
            batch = next(loader)
            skipped = int(batch.pop("skipped"))  # read on the host, before the copy
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}  # pinned: overlaps the step
            mask = batch["mask"]
            gen = torch.Generator(device).manual_seed(hash((cfg.train.seed, rank, step, micro)) & 0x7FFFFFFF)
            x = add_noise(batch["x"], mask, cfg.data.noise_scale if args.mode == "pretrain" else 0.0, gen,
                          cfg.data.noise_norm)
            if anneal:
                n = step * accum + micro if cfg.model.moe.temperature_unit == "forward" else step
                engine.module.set_step(n)
            probe = cfg.train.count_host_syncs and micro == accum - 1 and (step + 1) % cfg.train.log_every == 0
            with count_host_syncs() if probe else contextlib.nullcontext() as syncs:
                out = engine(x.to(dtype))
                per_sample = l2re(out.pred, batch["y"], mask)
                loss = training_loss(cfg, out, per_sample, batch["dataset_id"])
                bad = guard.nonfinite(loss)  # agreed by all ranks: they skip backward and step together
                if not bad:
                    guard.good()
                    engine.backward(loss)
                    if clip_here and engine.is_gradient_accumulation_boundary():
                        clip_global_grad_norm_(engine.module, cfg.train.grad_clip)
                    engine.step()
                    metrics.add(loss, per_sample, batch["dataset_id"], out, skipped)
            if probe:
                host_syncs = dict(syncs)
            if bad:
                guard.skip(step, [train_sources[i].name for i in batch["dataset_id"].tolist()],
                           checkpointing.latest_tag(ckpt_dir))
        step += 1
        heartbeat.beat(step)
        if bar is not None:
            bar.update(1)
        if step % cfg.train.log_every == 0 or step == steps:
            values = metrics.reduce()
            elapsed = time.perf_counter() - t_interval
            values["perf/samples_per_s"] = values["train/samples"] / elapsed
            values["perf/tokens_per_s"] = values["perf/samples_per_s"] * tokens_per_sample
            values["perf/peak_mem_mib"] = peak_memory_mib(device)
            values["train/skipped_nonfinite"] = float(guard.skipped)
            if cfg.train.count_host_syncs:
                values["perf/host_syncs"] = float(sum(host_syncs.values()))
                log.info("host syncs in step %d: %s", step, host_syncs or "none")
            values["train/lr"] = engine.get_lr()[0]
            if cfg.model.is_moe:
                values["moe/temperature"] = engine.module.temperature
            metrics.reset()
            t_interval = time.perf_counter()
            if rank == 0:
                history.append({"step": step, **values})
                tracker.log_metrics(values, step)
                tqdm.write(_log_line(step, steps, values, [s.name for s in train_sources]), file=sys.stdout)
        if step % cfg.train.eval_every == 0 and step != steps:
            result = _evaluate(engine, cfg, test_sources, rank, world)
            engine.train()
            if rank == 0:
                tracker.log_metrics(result.metrics(), step)
                tqdm.write(format_table(result), file=sys.stdout)
        if preemption.agreed(device):
            save_checkpoint()
            outcome = "stopping without requeue (SIGTERM)"
            if rank == 0 and preemption.wants_requeue:
                outcome = requeue_job()
            if bar is not None:
                bar.close()
            log.info("preempted at step %d: checkpoint written, %s", step, outcome)
            tracker.finish("KILLED")
            shutdown()
            return {"preempted_at": step}
        if step % cfg.train.checkpoint_every == 0 or step == steps:
            save_checkpoint()
    if bar is not None:
        bar.close()
    result = _evaluate(engine, cfg, test_sources, rank, world)
    summary = {**(history[-1] if history else {}), **result.metrics()}
    if rank == 0:
        print(format_table(result), flush=True)
        write_eval_outputs(result, out_dir / "eval", tracker, step, history=history)
        tracker.log_metrics(result.metrics(), step)
        (out_dir / "summary.json").write_text(json.dumps(
            {**summary, "mlflow_uri": resolve_uri(cfg.tracking.uri, out_dir), "mlflow_run_id": tracker.run_id,
             "mode": args.mode, "datasets": names}, indent=1))
        print(f"outputs: {out_dir.resolve()}  (mlflow: {resolve_uri(cfg.tracking.uri, out_dir)}, "
              f"run {tracker.run_id})", flush=True)
    if rank == 0 and args.mode != "evaluate":
        from nestor_ds.inference.model_io import export_model

        model_dir = export_model(ckpt_dir, out_dir / "model")  # the final checkpoint as a loadable folder
        tracker.log_artifact(model_dir, "model")  # the MLflow UI leads from the run to its weights
        print(f"model: {model_dir.resolve()}  (nestor_ds.load_model / nestor-ds predict --model)", flush=True)
    tracker.finish()
    shutdown()
    return summary


def _evaluate(engine: Any, cfg: RunConfig, sources: list, rank: int, world: int) -> Any:
    from nestor_ds.engine.evaluate import evaluate

    engine.eval()
    dtype = torch.bfloat16 if engine.bfloat16_enabled() else torch.float32
    return evaluate(engine, cfg, sources, rank, world, engine.device, dtype)


def _log_line(step: int, steps: int, v: dict[str, float], names: list[str]) -> str:
    per_set = " ".join(f"{n}={v[f'train/{n}/l2re']:.3f}" for n in names if f"train/{n}/l2re" in v)
    image = " ".join(f"{v[k]:.2f}" for k in sorted(k for k in v if k.startswith("load/image/")))
    token = " ".join(f"{v[k]:.2f}" for k in sorted(k for k in v if k.startswith("load/token/")))
    return (f"step {step}/{steps} | loss {v['train/loss']:.4f} | l2re {per_set} | aux img {v['train/aux_image']:.3f}"
            f" tok {v['train/aux_token']:.3f} | load img [{image}] tok [{token}] | "
            f"{v['perf/samples_per_s']:.1f} samples/s {v['perf/tokens_per_s']:.0f} tokens/s | "
            f"peak {v['perf/peak_mem_mib']:.0f} MiB | lr {v['train/lr']:.2e}"
            + (f" | T {v['moe/temperature']:.3f}" if "moe/temperature" in v else "")
            + (f" | dropped {v['moe/dropped_share']:.1%}" if "moe/dropped_share" in v else ""))
