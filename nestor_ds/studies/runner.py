"""``nestor-ds study run``: every run of a study, as ordinary training runs, resumable.

A run whose folder holds ``summary.json`` is finished and skipped; any other resumes from its own
checkpoints (the trainer does that). Runs are MLflow children of one parent run per study, in the study's
own store (``<study dir>/mlflow.db``). Locally up to ``--parallel`` runs go at once, a fine-tuning run
after the run it starts from; with ``--launcher slurm`` each run is an ``sbatch`` job (an upstream run is
an ``afterok`` dependency) and the command polls them to the end.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

from nestor_ds.atomic import write_text_atomic
from nestor_ds.config.shipped import SHIPPED_ROOT, resolve_shipped
from nestor_ds.errors import UserError
from nestor_ds.studies.spec import PlannedRun, StudySpec, plan

log = logging.getLogger("nestor_ds.study")
Launcher = Literal["torchrun", "deepspeed", "slurm"]
FINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}


class StudyRunner:
    """Runs a study's arms x seeds as ordinary runs (local launchers or Slurm), skipping finished ones."""

    def __init__(
        self, spec: StudySpec, out: Path, launcher: Launcher = "torchrun", parallel: int = 1, poll_s: float = 1.0
    ) -> None:
        if parallel < 1:
            raise UserError(f"--parallel must be at least 1, got {parallel}")
        self.spec, self.out, self.launcher, self.parallel, self.poll_s = spec, Path(out), launcher, parallel, poll_s
        self.uri = f"sqlite:///{self.out.resolve() / 'mlflow.db'}"

    # ------------------------------------------------------------------ the parent MLflow run
    def _parent(self) -> Any:
        from nestor_ds.tracking import Tracker

        state_file = self.out / "study.json"
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
        tracker = Tracker(
            self.uri,
            f"study-{self.spec.name}",
            self.spec.name,
            self.out / "mlflow-artifacts",
            enabled=True,
            tags={"study": self.spec.name},
            run_id=state.get("parent_run_id"),
        )
        if "parent_run_id" not in state:
            tracker.log_params({"study": self.spec.model_dump(mode="json")})
            write_text_atomic(state_file, json.dumps({"parent_run_id": tracker.run_id}, indent=1))
        return tracker

    def _close_abandoned(self, key: str) -> None:
        """A killed attempt's MLflow run stays RUNNING: mark it KILLED before the run starts again (a resumed
        run turns its own back to RUNNING; one killed before its first checkpoint starts a new MLflow run)."""
        from mlflow import MlflowClient

        client = MlflowClient(self.uri)
        exp = client.get_experiment_by_name(f"study-{self.spec.name}")
        if exp is None:
            return
        for r in client.search_runs(
            [exp.experiment_id], filter_string=f"tags.mlflow.runName = '{key}' and attributes.status = 'RUNNING'"
        ):
            client.set_terminated(r.info.run_id, "KILLED")
            log.info("  %s: MLflow run %s of a killed attempt marked KILLED", key, r.info.run_id)

    def runs(self, parent_run_id: str | None = None) -> list[PlannedRun]:
        """Every planned run of the study."""
        tracking = {"tracking.uri": self.uri, "tracking.experiment": f"study-{self.spec.name}"}
        if parent_run_id:
            tracking["tracking.parent_run_id"] = parent_run_id
        return plan(self.spec, self.out, tracking)

    # ------------------------------------------------------------------ running
    def run(self) -> int:
        """0 when every run is finished; 1 when some failed (named, with their logs); 130 when interrupted."""
        self.out.mkdir(parents=True, exist_ok=True)
        parent = self._parent()
        runs = self.runs(parent.run_id)
        signal.signal(signal.SIGTERM, _interrupt)
        done = [r for r in runs if r.done]
        todo = [r for r in runs if not r.done]
        log.info(
            "study %s: %d runs (%d arms x %d seeds), %d finished before, %d to run with %s",
            self.spec.name,
            len(runs),
            len(self.spec.arms),
            len(self.spec.seeds),
            len(done),
            len(todo),
            self.launcher,
        )
        for r in done:
            log.info("  %s: finished before, skipped", r.key)
        try:
            failed = self._run_slurm(runs, todo) if self.launcher == "slurm" else self._run_local(runs, todo)
        except KeyboardInterrupt:
            parent.finish("KILLED")
            return 130
        parent.finish("FAILED" if failed else "FINISHED")
        if failed:
            by_key = {r.key: r for r in runs}
            log.error(
                "study %s: %d runs failed: %s",
                self.spec.name,
                len(failed),
                "; ".join(f"{k} (log {by_key[k].out / 'run.log'})" for k in failed),
            )
            return 1
        log.info("study %s: all %d runs finished; report: nestor-ds study report", self.spec.name, len(runs))
        return 0

    def _train_args(self, run: PlannedRun) -> list[str]:
        args = [
            "--config",
            str(resolve_shipped(run.config)),
            "--ds_config",
            str(resolve_shipped(run.ds_config)),
            "--mode",
            run.mode,
            *run.set_args(),
        ]
        return args + (["--weights", str(run.weights)] if run.weights else [])

    def _local_command(self, run: PlannedRun) -> list[str]:
        from nestor_ds.engine.distributed import free_port

        train = [str(SHIPPED_ROOT / "launch" / "train.py"), *self._train_args(run)]
        if self.launcher == "deepspeed":
            return [
                sys.executable,
                "-m",
                "deepspeed.launcher.runner",
                "--num_gpus",
                str(run.ranks),
                "--master_port",
                str(free_port()),
                *train,
            ]
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(run.ranks),
            "--master_port",
            str(free_port()),
            *train,
        ]

    def _run_local(self, runs: list[PlannedRun], todo: list[PlannedRun]) -> list[str]:
        by_key = {r.key: r for r in runs}
        pending = list(todo)
        running: dict[str, Any] = {}
        failed: list[str] = []
        finished = len(runs) - len(todo)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            self._schedule(pending, running, failed, by_key, env, finished, len(runs))
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the runs checkpoint at their next step and stop
            log.warning(
                "study %s interrupted: stopping %d runs (they checkpoint first); run the same command again to finish",
                self.spec.name,
                len(running),
            )
            for proc, *_ in running.values():
                proc.send_signal(signal.SIGTERM)
            for proc, *_ in running.values():
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
            raise
        return failed

    def _schedule(
        self,
        pending: list[PlannedRun],
        running: dict,
        failed: list[str],
        by_key: dict[str, PlannedRun],
        env: dict[str, str],
        finished: int,
        total: int,
    ) -> None:
        while pending or running:
            for run in list(pending):
                if len(running) >= self.parallel:
                    break
                if run.after in failed:
                    pending.remove(run)
                    failed.append(run.key)
                    log.error("  %s: not run, its upstream %s failed", run.key, run.after)
                    continue
                if run.after and not by_key[run.after].done:
                    continue  # waits for the run it starts from
                pending.remove(run)
                run.out.mkdir(parents=True, exist_ok=True)
                self._close_abandoned(run.key)
                logfile = open(run.out / "run.log", "a")
                proc = subprocess.Popen(self._local_command(run), stdout=logfile, stderr=subprocess.STDOUT, env=env)
                running[run.key] = (proc, run, time.monotonic(), logfile)
                log.info("  %s: started (%s, log %s)", run.key, run.mode, run.out / "run.log")
            for key, (proc, run, t0, logfile) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                logfile.close()
                del running[key]
                _record_wall(run, time.monotonic() - t0, self.launcher)
                if rc == 0 and run.done:
                    finished += 1
                    log.info("  %s: finished in %.0f s (%d/%d)", key, time.monotonic() - t0, finished, total)
                else:
                    failed.append(key)
                    log.error("  %s: failed (exit status %s), log %s", key, rc, run.out / "run.log")
            if running or pending:
                time.sleep(self.poll_s)

    def _run_slurm(self, runs: list[PlannedRun], todo: list[PlannedRun]) -> list[str]:
        jobs: dict[str, str] = {}
        for run in todo:
            run.out.mkdir(parents=True, exist_ok=True)
            self._close_abandoned(run.key)
            script = SHIPPED_ROOT / "slurm" / ("pretrain.sbatch" if run.mode == "pretrain" else "finetune.sbatch")
            env = {
                **os.environ,
                "RUN_DIR": str(run.out.resolve()),
                "CONFIG": str(resolve_shipped(run.config)),
                "DS_CONFIG": str(resolve_shipped(run.ds_config)),
                "EXTRA_ARGS": shlex.join(run.set_args()),
            }
            if run.weights:
                env["WEIGHTS"] = str(run.weights.resolve())
            cmd = [
                "sbatch",
                "--parsable",
                "--nodes=1",
                f"--ntasks={run.ranks}",
                f"--ntasks-per-node={run.ranks}",
                f"--job-name=study-{self.spec.name}",
                f"--output={run.out.resolve() / 'slurm-%j.out'}",
            ]
            if run.after in jobs:
                cmd.append(f"--dependency=afterok:{jobs[run.after]}")
            done = subprocess.run([*cmd, str(script)], capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"sbatch for {run.key} failed: {done.stderr.strip()}")
            jobs[run.key] = done.stdout.strip().split(";")[0]
            log.info("  %s: submitted as job %s", run.key, jobs[run.key])
        by_key = {r.key: r for r in runs}
        failed: list[str] = []
        waiting = dict(jobs)
        while waiting:
            for key, job in list(waiting.items()):
                state, runtime = _job_state(job)
                if state is None or state in FINAL:
                    run = by_key[key]
                    del waiting[key]
                    _record_wall(run, runtime, "slurm")
                    if run.done:
                        log.info("  %s: job %s finished (%s)", key, job, state or "gone from the queue")
                    else:
                        failed.append(key)
                        log.error(
                            "  %s: job %s ended %s without a summary, log %s",
                            key,
                            job,
                            state,
                            run.out / f"slurm-{job}.out",
                        )
                elif state == "PENDING" and "DependencyNeverSatisfied" in _job_field(job, "Reason"):
                    subprocess.run(["scancel", job], capture_output=True)
            if waiting:
                time.sleep(self.poll_s)
        return failed


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _job_field(job: str, name: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True)
    for part in out.stdout.split():
        if part.startswith(f"{name}="):
            return part.split("=", 1)[1]
    return ""


def _job_state(job: str) -> tuple[str | None, float]:
    """(state, seconds run) from ``scontrol show job``; (None, 0) once the job left Slurm's memory."""
    state = _job_field(job, "JobState")
    if not state:
        return None, 0.0
    h, m, s = (_job_field(job, "RunTime").split("-")[-1].split(":") + ["0", "0", "0"])[:3]
    return state, int(h) * 3600 + int(m) * 60 + int(s)


def _record_wall(run: PlannedRun, seconds: float, launcher: str) -> None:
    """Wall time of every attempt of the run, summed (a resumed run adds to it): the report's compute column."""
    path = run.out / "study_run.json"
    state = json.loads(path.read_text()) if path.is_file() else {"wall_s": 0.0, "attempts": 0}
    state.update(wall_s=state["wall_s"] + seconds, attempts=state["attempts"] + 1, ranks=run.ranks, launcher=launcher)
    write_text_atomic(path, json.dumps(state, indent=1))
