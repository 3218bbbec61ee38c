"""The training loop of a run's context: steps, logging, evaluation, checkpoints, preemption, the time
limit, and the finite guard on losses and gradient norms (with optional rollback)."""

from __future__ import annotations

import contextlib
import logging
import sys
import time

import torch

from nestor_ds.engine import checkpointing
from nestor_ds.engine.context import Outcome, RunContext, StopReason, evaluate_run
from nestor_ds.engine.step import SetFacts, unrolled_step
from nestor_ds.profiling import count_host_syncs

log = logging.getLogger("nestor_ds")
CALIBRATION_STEPS = 20  # train.fit_steps_to_time measures the step time over these


def train_loop(ctx: RunContext) -> Outcome:
    """Train from ``ctx.step`` to ``ctx.steps``, or until ``train.time_limit_s`` or a preemption signal (then
    a checkpoint is written at the step boundary and the job requeued if Slurm asked for it)."""
    loop = _Loop(ctx)
    try:
        return loop.run()
    finally:
        loop.bar.close()


class _Loop:
    """The loop's state: loader, metrics, guard and the device flags carried from one step to the next."""

    def __init__(self, ctx: RunContext) -> None:
        from tqdm import tqdm

        from nestor_ds.config.deepspeed_config import engine_clips_itself
        from nestor_ds.engine.distributed import Heartbeat
        from nestor_ds.engine.finite_guard import FiniteGuard
        from nestor_ds.engine.metrics import IntervalMetrics

        if ctx.preemption is None or ctx.optimizer is None or ctx.scheduler is None:
            raise RuntimeError("train_loop needs a training context (optimizer, scheduler, preemption)")
        self.ctx, self.cfg, self.engine = ctx, ctx.cfg, ctx.engine
        self.preemption, self.optimizer, self.scheduler = ctx.preemption, ctx.optimizer, ctx.scheduler
        engine, cfg = ctx.engine, ctx.cfg
        self.device = engine.device
        self.dtype = (
            torch.bfloat16 if engine.bfloat16_enabled() else torch.float16 if engine.fp16_enabled() else torch.float32
        )
        self.names = [s.name for s in ctx.train_sources]
        self.anneal = ctx.args.mode == "pretrain" and cfg.model.is_moe
        self.clip_here = engine_clips_itself(ctx.ds)
        self.loader = ctx.batches()
        self.facts = SetFacts.of(ctx.train_sources, cfg.model.channels, self.device, cfg.model.normalize)
        self.metrics = IntervalMetrics(
            self.names, cfg.parallel.ep_size, self.device, drop_share=cfg.model.is_moe and cfg.model.moe.drop_tokens
        )
        # a bar only on a terminal: in batch logs the per-interval lines say the same without redraw debris
        self.bar = tqdm(
            total=ctx.steps,
            initial=ctx.step,
            desc=ctx.args.mode,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
            disable=ctx.rank != 0 or not sys.stderr.isatty(),
        )
        self.heartbeat = Heartbeat(ctx.out_dir / "heartbeat", ctx.rank, ctx.world).start()
        self.guard = FiniteGuard(cfg.train.max_bad_steps)
        self.grad_bad: torch.Tensor | None = None  # ZeRO 0: last step's non-finite gradient norm, on the device
        self.verdict_pending = False  # ZeRO 0: last step's gradient norm not read yet
        self.last_ids = torch.zeros(0, dtype=torch.long)
        self.host_syncs: dict[str, int] = {}
        self.rollbacks = 0
        self.t_interval = time.perf_counter()
        self.started = time.monotonic()
        self.first_step = ctx.step

    def sets_of(self, ids: torch.Tensor) -> list[str]:
        return [self.ctx.train_sources[i].name for i in ids.tolist()]

    def latest(self) -> str | None:
        return checkpointing.latest_tag(self.ctx.ckpt_dir)

    def save_checkpoint(self) -> None:
        ctx = self.ctx
        client_state = {
            "step": ctx.step,
            "config": self.cfg.model_dump(mode="json"),
            "mlflow_run_id": ctx.tracker.run_id,
            "lr_scale": ctx.lr_scale,
        }
        checkpointing.save(self.engine, ctx.ckpt_dir, ctx.step, client_state, self.cfg.train.keep_checkpoints)

    def run(self) -> Outcome:
        """Steps until the plan, the time limit or a preemption ends the run."""
        from nestor_ds.engine.finite_guard import NonFiniteStop
        from nestor_ds.engine.preemption import requeue_job

        ctx, cfg = self.ctx, self.cfg
        self.heartbeat.beat(ctx.step)
        ctx.progress.mark()
        self.engine.train()
        while ctx.step < ctx.steps:
            try:
                for micro in range(cfg.train.grad_accum):
                    self.micro_step(ctx.step, micro)
            except NonFiniteStop as stop:
                self.roll_back(stop)
                continue
            ctx.step += 1
            step = ctx.step
            self.heartbeat.beat(step)
            ctx.progress.mark()
            self.bar.update(1)
            if step % cfg.train.log_every == 0 or step == ctx.steps:
                self.log_interval(step)
            if step % cfg.train.eval_every == 0 and step != ctx.steps:
                self.evaluate(step)
            late = cfg.train.time_limit_s is not None and time.monotonic() - self.started > cfg.train.time_limit_s
            if self.preemption.agreed(self.device, late):
                self.save_checkpoint()
                requeue = "stopping without requeue (SIGTERM)"
                if ctx.rank == 0 and self.preemption.wants_requeue:
                    requeue = requeue_job()
                log.info("preempted at step %d: checkpoint written, %s", step, requeue)
                return Outcome(StopReason.PREEMPTED, step)
            if cfg.train.fit_steps_to_time and step == self.first_step + CALIBRATION_STEPS:
                self.fit_steps_to_time(step)
            out_of_time = self.preemption.out_of_time
            if step % cfg.train.checkpoint_every == 0 or step == ctx.steps or out_of_time:
                self.save_checkpoint()
            if out_of_time and step < ctx.steps:
                log.info(
                    "train.time_limit_s=%g reached at step %d of %d: the run ends here",
                    cfg.train.time_limit_s,
                    step,
                    ctx.steps,
                )
                return Outcome(StopReason.TIME_LIMIT, step)
        return Outcome(StopReason.FINISHED, ctx.step)

    def fit_steps_to_time(self, step: int) -> None:
        """train.fit_steps_to_time: the steps that fit in train.time_limit_s at the rate measured so far (the
        slowest rank's), and the one-cycle schedule rebuilt for them."""
        from nestor_ds.engine.distributed import gather
        from nestor_ds.engine.optim import resize_one_cycle

        ctx, cfg = self.ctx, self.cfg
        elapsed = max(gather([time.monotonic() - self.started]))
        per_step = elapsed / (step - self.first_step)
        fit = step + int((cfg.train.time_limit_s - elapsed) / per_step)
        if fit >= ctx.steps:
            return
        ctx.steps = max(fit, step + 1)
        resize_one_cycle(self.scheduler, ctx.steps, cfg.train.optimizer.warmup_fraction, step)
        self.bar.total = ctx.steps
        log.info(
            "train.fit_steps_to_time: %.3f s per step, %d steps fit in train.time_limit_s=%g; the one-cycle "
            "schedule now spans them",
            per_step,
            ctx.steps,
            cfg.train.time_limit_s,
        )

    def micro_step(self, step: int, micro: int) -> None:
        """Forward, the agreed finite check (the step's one device read), backward and, at the accumulation
        boundary, the optimizer step; a non-finite loss skips all of it on every rank, a non-finite gradient
        norm the update."""
        from nestor_ds.engine.grad_norm import clip_global_grad_norm_

        cfg, engine, guard = self.cfg, self.engine, self.guard
        batch = next(self.loader)
        skipped = int(batch.pop("skipped"))  # read on the host, before the copy
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}  # pinned: overlaps the step
        gen = torch.Generator(self.device).manual_seed(hash((cfg.train.seed, self.ctx.rank, step, micro)) & 0x7FFFFFFF)
        noise = cfg.data.noise_scale if self.ctx.args.mode == "pretrain" else 0.0
        if self.anneal:
            engine.module.set_step(
                step * cfg.train.grad_accum + micro if cfg.model.moe.temperature_unit == "forward" else step
            )
        probe = (
            cfg.train.count_host_syncs and micro == cfg.train.grad_accum - 1 and (step + 1) % cfg.train.log_every == 0
        )
        with count_host_syncs() if probe else contextlib.nullcontext() as syncs:
            result = unrolled_step(engine, cfg, batch, self.facts, gen, noise, self.dtype)
            loss, per_sample, out = result.loss, result.per_sample, result.out
            bad_loss, bad_grad = guard.check(loss, self.grad_bad)  # agreed: all ranks skip together
            self.grad_bad = None
            if bad_grad:
                guard.skip(step - 1, self.sets_of(self.last_ids), self.latest(), "gradient norm")
            elif self.verdict_pending:
                guard.good()  # the last step's loss and gradient norm were both finite
            self.verdict_pending = False
            if not bad_loss:
                engine.backward(loss)
                boundary = engine.is_gradient_accumulation_boundary()
                if boundary and self.clip_here:
                    norm = clip_global_grad_norm_(engine.module, cfg.train.grad_clip)
                    # fused Adam skips its update on the device where found_inf is 1: nothing read here
                    self.grad_bad = (~torch.isfinite(norm)).float()
                    setattr(self.optimizer, "found_inf", self.grad_bad)  # torch's fused Adam reads this attribute
                engine.step()
                if boundary and not self.clip_here and getattr(engine.optimizer, "overflow", False):
                    # ZeRO 1/2 found the gradient norm non-finite itself and skipped the update
                    guard.skip(step, self.sets_of(batch["dataset_id"]), self.latest(), "gradient norm")
                elif self.clip_here:
                    self.verdict_pending = True  # the gradient norm's flag is read with the next loss
                else:
                    guard.good()
                self.metrics.add(loss, per_sample, batch["dataset_id"], out, skipped)
        if probe:
            self.host_syncs = dict(syncs or {})
        self.last_ids = batch["dataset_id"]
        if bad_loss:
            guard.skip(step, self.sets_of(self.last_ids), self.latest())

    def roll_back(self, stop: Exception) -> None:
        """train.on_nonfinite=rollback: back to the newest intact checkpoint with a lower lr; otherwise (or
        with no rollback or checkpoint left) the stop stands."""
        from nestor_ds.engine.resume import continue_schedule

        ctx, cfg = self.ctx, self.cfg
        if cfg.train.on_nonfinite != "rollback" or self.rollbacks >= cfg.train.max_rollbacks or self.latest() is None:
            raise stop
        self.rollbacks += 1
        client = checkpointing.load(self.engine, ctx.ckpt_dir, lambda saved, where: None)  # this run's own
        if client is None:  # latest() named a tag a moment ago: it vanished under us
            raise stop
        ctx.lr_scale *= cfg.train.rollback_lr_factor
        ctx.step = int(client["step"])
        continue_schedule(self.scheduler, ctx.schedule, ctx.step, ctx.lr_scale)
        self.loader = ctx.batches()  # the opened sources, restarted at the checkpoint's batch
        self.guard.good()
        self.grad_bad, self.verdict_pending = None, False
        self.metrics.reset()
        self.bar.n = ctx.step
        self.heartbeat.beat(ctx.step)
        note = (
            f"rollback {self.rollbacks}/{cfg.train.max_rollbacks}: {stop}. Back to {client['tag']} (step "
            f"{ctx.step}), lr x{ctx.lr_scale:g}; the steps after it run (and are logged) again"
        )
        log.warning(note)
        if ctx.rank == 0:
            ctx.tracker.log_params({f"rollback_{self.rollbacks}": note})

    def log_interval(self, step: int) -> None:
        from tqdm import tqdm

        from nestor_ds.engine.metrics import peak_memory_mib

        ctx, cfg = self.ctx, self.cfg
        values = self.metrics.reduce()
        elapsed = time.perf_counter() - self.t_interval
        values["perf/samples_per_s"] = values["train/samples"] / elapsed
        values["perf/tokens_per_s"] = values["perf/samples_per_s"] * cfg.model.tokens
        values["perf/peak_mem_mib"] = peak_memory_mib(self.device)
        values["train/skipped_nonfinite"] = float(self.guard.skipped)
        if cfg.train.count_host_syncs:
            values["perf/host_syncs"] = float(sum(self.host_syncs.values()))
            log.info("host syncs in step %d: %s", step, self.host_syncs or "none")
        values["train/lr"] = self.engine.get_lr()[0]
        if cfg.model.is_moe:
            values["moe/temperature"] = self.engine.module.temperature
        if cfg.model.is_moe and cfg.parallel.ep_size > 1:  # this rank's expert all-to-alls over the interval
            traffic = [layer.deepspeed_moe.traffic for layer in self.engine.module.moe_layers]
            values["perf/alltoall_share"] = sum(t.seconds for t in traffic) / elapsed
            values["perf/alltoall_mib_per_s"] = sum(t.bytes_out for t in traffic) / 2**20 / elapsed
        self.metrics.reset()
        self._reset_traffic()
        self.t_interval = time.perf_counter()
        if ctx.rank == 0:
            ctx.history.append({"step": step, **values})
            ctx.tracker.log_metrics(values, step)
            tqdm.write(_log_line(step, ctx.steps, values, self.names), file=sys.stdout)

    def _reset_traffic(self) -> None:
        for layer in self.engine.module.moe_layers if self.cfg.model.is_moe else ():
            layer.deepspeed_moe.traffic.reset()

    def evaluate(self, step: int) -> None:
        from tqdm import tqdm

        from nestor_ds.engine.evaluate import format_table

        ctx = self.ctx
        result = evaluate_run(ctx)
        self._reset_traffic()  # the interval's all-to-all figures are the training steps'
        self.engine.train()
        if ctx.rank == 0:
            ctx.tracker.log_metrics(result.metrics(), step)
            tqdm.write(format_table(result), file=sys.stdout)


def _log_line(step: int, steps: int, v: dict[str, float], names: list[str]) -> str:
    per_set = " ".join(f"{n}={v[f'train/{n}/l2re']:.3f}" for n in names if f"train/{n}/l2re" in v)
    image = " ".join(f"{v[k]:.2f}" for k in sorted(k for k in v if k.startswith("load/image/")))
    token = " ".join(f"{v[k]:.2f}" for k in sorted(k for k in v if k.startswith("load/token/")))
    return (
        f"step {step}/{steps} | loss {v['train/loss']:.4f} | l2re {per_set} | aux img {v['train/aux_image']:.3f}"
        f" tok {v['train/aux_token']:.3f} | load img [{image}] tok [{token}] | "
        f"{v['perf/samples_per_s']:.1f} samples/s {v['perf/tokens_per_s']:.0f} tokens/s | "
        f"peak {v['perf/peak_mem_mib']:.0f} MiB | lr {v['train/lr']:.2e}"
        + (f" | T {v['moe/temperature']:.3f}" if "moe/temperature" in v else "")
        + (f" | dropped {v['moe/dropped_share']:.1%}" if "moe/dropped_share" in v else "")
        + (f" | all-to-all {v['perf/alltoall_share']:.0%} of time" if "perf/alltoall_share" in v else "")
    )
