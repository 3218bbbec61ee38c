"""The training loop of a run built by ``trainer._setup``: steps, logging, evaluation, checkpoints,
preemption, and the finite guard on losses and gradient norms."""
from __future__ import annotations

import contextlib
import logging
import sys
import time

import torch

from nestor_ds.engine import checkpointing
from nestor_ds.engine.trainer import RunContext, _evaluate, add_noise, training_loss

log = logging.getLogger("nestor_ds")


def train_loop(ctx: RunContext) -> str:
    """Train from ``ctx.step`` to ``ctx.steps``; returns ``"finished"`` or ``"preempted"`` (a checkpoint was
    written at the step boundary and the job requeued if Slurm asked for it)."""
    from tqdm import tqdm

    from nestor_ds.config.deepspeed_config import engine_clips_itself
    from nestor_ds.data.loader import build_train_loader
    from nestor_ds.engine.distributed import Heartbeat
    from nestor_ds.engine.evaluate import format_table
    from nestor_ds.engine.finite_guard import FiniteGuard, NonFiniteStop
    from nestor_ds.engine.grad_norm import clip_global_grad_norm_
    from nestor_ds.engine.losses import l2re
    from nestor_ds.engine.metrics import IntervalMetrics, peak_memory_mib
    from nestor_ds.engine.preemption import requeue_job
    from nestor_ds.engine.resume import continue_schedule
    from nestor_ds.model.benchmark import count_host_syncs

    cfg, engine, rank, steps = ctx.cfg, ctx.engine, ctx.rank, ctx.steps
    device = engine.device
    dtype = torch.bfloat16 if engine.bfloat16_enabled() else torch.float16 if engine.fp16_enabled() else torch.float32
    accum = cfg.train.grad_accum
    anneal = ctx.args.mode == "pretrain" and cfg.model.is_moe
    names = [s.name for s in ctx.train_sources]
    loader = iter(build_train_loader(cfg, rank, ctx.world, start_batch=ctx.step * accum))
    metrics = IntervalMetrics(names, cfg.parallel.ep_size, device,
                              drop_share=cfg.model.is_moe and cfg.model.moe.drop_tokens)
    clip_here = engine_clips_itself(ctx.ds)
    # a bar only on a terminal: in batch logs the per-interval lines say the same without redraw debris
    bar = tqdm(total=steps, initial=ctx.step, desc=ctx.args.mode, unit="step", dynamic_ncols=True, file=sys.stderr,
               disable=rank != 0 or not sys.stderr.isatty())
    host_syncs: dict[str, int] = {}
    heartbeat = Heartbeat(ctx.out_dir / "heartbeat", rank, ctx.world).start()
    guard = FiniteGuard(cfg.train.max_bad_steps)
    grad_bad: torch.Tensor | None = None  # ZeRO-0: the last step's non-finite gradient norm, read with the next loss
    last_ids = torch.zeros(0, dtype=torch.long)
    verdict_pending = False
    rollbacks = 0

    def sets_of(ids: torch.Tensor) -> list[str]:
        return [ctx.train_sources[i].name for i in ids.tolist()]

    def latest() -> str | None:
        return checkpointing.latest_tag(ctx.ckpt_dir)

    def save_checkpoint() -> None:
        client_state = {"step": ctx.step, "config": cfg.model_dump(mode="json"), "mlflow_run_id": ctx.tracker.run_id,
                        "lr_scale": ctx.lr_scale}
        checkpointing.save(engine, ctx.ckpt_dir, ctx.step, client_state, cfg.train.keep_checkpoints)

    heartbeat.beat(ctx.step)
    t_interval = time.perf_counter()
    engine.train()
    try:
        while ctx.step < steps:
            step = ctx.step
            try:
                for micro in range(accum):
                    batch = next(loader)
                    skipped = int(batch.pop("skipped"))  # read on the host, before the copy
                    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}  # pinned: overlaps the step
                    mask = batch["mask"]
                    gen = torch.Generator(device).manual_seed(hash((cfg.train.seed, rank, step, micro)) & 0x7FFFFFFF)
                    x = add_noise(batch["x"], mask, cfg.data.noise_scale if ctx.args.mode == "pretrain" else 0.0, gen,
                                  cfg.data.noise_norm)
                    if anneal:
                        n = step * accum + micro if cfg.model.moe.temperature_unit == "forward" else step
                        engine.module.set_step(n)
                    probe = cfg.train.count_host_syncs and micro == accum - 1 and (step + 1) % cfg.train.log_every == 0
                    with count_host_syncs() if probe else contextlib.nullcontext() as syncs:
                        out = engine(x.to(dtype))
                        per_sample = l2re(out.pred, batch["y"], mask)
                        loss = training_loss(cfg, out, per_sample, batch["dataset_id"])
                        # agreed by all ranks: they skip backward and step together
                        bad_loss, bad_grad = guard.check(loss, grad_bad)
                        grad_bad = None
                        if bad_grad:
                            guard.skip(step - 1, sets_of(last_ids), latest(), "gradient norm")
                        elif verdict_pending:
                            guard.good()  # the last step's loss and gradient norm were both finite
                        verdict_pending = False
                        if not bad_loss:
                            engine.backward(loss)
                            boundary = engine.is_gradient_accumulation_boundary()
                            if boundary and clip_here:
                                norm = clip_global_grad_norm_(engine.module, cfg.train.grad_clip)
                                # fused Adam skips its update on the device where found_inf is 1: nothing read here
                                grad_bad = ctx.optimizer.found_inf = (~torch.isfinite(norm)).float()
                            engine.step()
                            if boundary and not clip_here and getattr(engine.optimizer, "overflow", False):
                                # ZeRO 1/2 found the gradient norm non-finite itself and skipped the update
                                guard.skip(step, sets_of(batch["dataset_id"]), latest(), "gradient norm")
                            elif clip_here:
                                verdict_pending = True  # the gradient norm's flag is read with the next loss
                            else:
                                guard.good()
                            metrics.add(loss, per_sample, batch["dataset_id"], out, skipped)
                    if probe:
                        host_syncs = dict(syncs)
                    last_ids = batch["dataset_id"]
                    if bad_loss:
                        guard.skip(step, sets_of(last_ids), latest())
            except NonFiniteStop as stop:
                if cfg.train.on_nonfinite != "rollback" or rollbacks >= cfg.train.max_rollbacks or latest() is None:
                    raise
                rollbacks += 1
                client = checkpointing.load(engine, ctx.ckpt_dir, lambda saved, where: None)  # this run's own
                ctx.lr_scale *= cfg.train.rollback_lr_factor
                continue_schedule(ctx.scheduler, ctx.schedule, int(client["step"]), ctx.lr_scale)
                ctx.step = int(client["step"])
                loader = iter(build_train_loader(cfg, rank, ctx.world, start_batch=ctx.step * accum))
                guard.reset()
                grad_bad, verdict_pending = None, False
                metrics.reset()
                bar.n = ctx.step
                heartbeat.beat(ctx.step)
                note = (f"rollback {rollbacks}/{cfg.train.max_rollbacks}: {stop}. Back to {client['tag']} (step "
                        f"{ctx.step}), lr x{ctx.lr_scale:g}; the steps after it run (and are logged) again")
                log.warning(note)
                if rank == 0:
                    ctx.tracker.log_params({f"rollback_{rollbacks}": note})
                continue
            ctx.step = step = step + 1
            heartbeat.beat(step)
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == steps:
                values = metrics.reduce()
                elapsed = time.perf_counter() - t_interval
                values["perf/samples_per_s"] = values["train/samples"] / elapsed
                values["perf/tokens_per_s"] = values["perf/samples_per_s"] * cfg.model.tokens
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
                    ctx.history.append({"step": step, **values})
                    ctx.tracker.log_metrics(values, step)
                    tqdm.write(_log_line(step, steps, values, names), file=sys.stdout)
            if step % cfg.train.eval_every == 0 and step != steps:
                result = _evaluate(engine, cfg, ctx.test_sources, rank, ctx.world)
                engine.train()
                if rank == 0:
                    ctx.tracker.log_metrics(result.metrics(), step)
                    tqdm.write(format_table(result), file=sys.stdout)
            if ctx.preemption.agreed(device):
                save_checkpoint()
                outcome = "stopping without requeue (SIGTERM)"
                if rank == 0 and ctx.preemption.wants_requeue:
                    outcome = requeue_job()
                log.info("preempted at step %d: checkpoint written, %s", step, outcome)
                return "preempted"
            if step % cfg.train.checkpoint_every == 0 or step == steps:
                save_checkpoint()
        return "finished"
    finally:
        bar.close()


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
