"""A study file: a base run, named arms (overrides of it), seeds and a budget; expanded into ordinary runs.

Every arm x seed (x data set, for arms fine-tuned on each set separately) is one training run in its own
folder, ``<study dir>/<arm>[/<data set>]/seed<k>``; nothing else distinguishes a study run from one started
by hand.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from nestor_ds.config.loading import ConfigError, describe_validation, load_config
from nestor_ds.config.schema import Strict


class Budget(Strict):
    """One of: optimizer steps, training samples (steps follow from the batch), or wall time per run."""

    steps: int | None = Field(None, gt=0)
    samples: int | None = Field(None, gt=0)
    wall_time_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> "Budget":
        given = [k for k in ("steps", "samples", "wall_time_s") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError(f"a budget gives exactly one of steps, samples, wall_time_s (got {given or 'none'})")
        return self


class Base(Strict):
    """The run config and DeepSpeed config every arm starts from."""

    config: str = Field(description="run config YAML (configs/... resolves to the shipped ones)")
    ds_config: str = Field("ds_configs/cpu_fp32.json", description="DeepSpeed JSON")
    set: dict[str, Any] = Field(default_factory=dict, description="overrides of the config for every arm")


class Arm(Strict):
    """One arm of a study: a name and the overrides on top of the base."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    set: dict[str, Any] = Field(default_factory=dict, description="overrides on top of the base")
    config: str | None = Field(None, description="another run config for this arm (default: the base's)")
    mode: Literal["pretrain", "finetune"] = "pretrain"
    init_from: str | None = Field(
        None,
        description="finetune: 'arm:<name>' (that arm's run with the same seed) or a checkpoint dir / .safetensors",
    )
    each_dataset: list[str] | None = Field(None, description="one run per data set, each on that set alone")
    budget: Budget | None = Field(None, description="default: the study's")
    report: bool = Field(True, description="False: run it (others start from it) but leave it out of the report")


class StudySpec(Strict):
    """A study file: base, arms, seeds, budget and what the report compares."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    data: Literal["published", "generated"] = Field(
        "generated",
        description="whether the runs use the published data sets and splits (the published numbers "
        "are then the same setup) or the project's generated ones",
    )
    base: Base
    arms: list[Arm] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    budget: Budget
    ranks: int = Field(1, gt=0, description="processes per run")
    baseline: str | None = Field(None, description="arm the others are compared with (default: the first)")
    metric: Literal["l2re_one_step", "l2re_rollout"] = Field("l2re_one_step", description="what wins are counted on")
    published: dict[str, str] = Field(default_factory=dict, description="arm -> column of the published table")

    @model_validator(mode="after")
    def _consistent(self) -> "StudySpec":
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ConfigError(f"arm names repeat: {names}")
        if self.baseline is not None and self.baseline not in names:
            raise ConfigError(f"baseline {self.baseline!r} is not an arm ({names})")
        for arm in self.arms:
            if arm.init_from and arm.init_from.startswith("arm:"):
                up = arm.init_from[4:]
                if up not in names or names.index(up) >= names.index(arm.name):
                    raise ConfigError(f"arm {arm.name!r}: init_from {arm.init_from!r} must name an earlier arm")
                if next(a for a in self.arms if a.name == up).each_dataset:
                    raise ConfigError(f"arm {arm.name!r}: {up!r} runs per data set; start from a single run")
            if arm.mode == "finetune" and not arm.init_from:
                raise ConfigError(f"arm {arm.name!r}: finetune needs init_from")
        from nestor_ds.studies.published import COLUMNS

        for arm_name, column in self.published.items():
            if arm_name not in names or column not in COLUMNS:
                raise ConfigError(f"published: {arm_name!r} -> {column!r}: needs an arm and one of {COLUMNS}")
        return self

    @property
    def baseline_arm(self) -> str:
        """The arm the others are compared against."""
        return self.baseline or self.arms[0].name


def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> StudySpec:
    """Read and check a study file; ``overrides`` (``--set``) are added to the base's."""
    from nestor_ds.config.shipped import resolve_shipped

    path = resolve_shipped(path)
    if not path.is_file():
        raise ConfigError(f"study file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"study file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"study file {path} must be a mapping at the top level")
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"invalid study file {path}:\n{describe_validation(err)}") from None
    spec.base.set.update(overrides or {})
    return spec


@dataclass
class PlannedRun:
    """One training run of the study."""

    arm: str
    seed: int
    dataset: str | None
    out: Path
    mode: str
    config: str
    ds_config: str
    sets: dict[str, Any]
    weights: Path | None = None
    after: str | None = None  # key of the run it starts from
    report: bool = True
    ranks: int = 1

    @property
    def key(self) -> str:
        """The run's folder and MLflow name: ``<arm>-seed<seed>``."""
        return "/".join(x for x in (self.arm, self.dataset, f"seed{self.seed}") if x)

    @property
    def done(self) -> bool:
        """A run is finished once its summary exists (written after its final evaluation and export)."""
        return (self.out / "summary.json").is_file()

    def set_args(self) -> list[str]:
        """``--set`` arguments (values as JSON, which is YAML)."""
        return [a for k, v in self.sets.items() for a in ("--set", f"{k}={json.dumps(v)}")]


def _steps(budget: Budget, config: str, sets: dict[str, Any], ranks: int) -> dict[str, Any]:
    if budget.steps is not None:
        return {"train.steps": budget.steps}
    if budget.wall_time_s is not None:  # as many steps as fit: the time limit ends the run
        return {"train.steps": 10**9, "train.time_limit_s": budget.wall_time_s, "train.fit_steps_to_time": True}
    cfg = load_config(config, sets)
    per_step = cfg.train.micro_batch_per_rank * cfg.train.grad_accum * ranks
    samples = budget.samples if budget.samples is not None else per_step  # the budget's validator gives one of three
    return {"train.steps": max(1, math.ceil(samples / per_step))}


def plan(spec: StudySpec, out: Path, tracking: dict[str, Any]) -> list[PlannedRun]:
    """Every run of the study, upstream runs first. ``tracking`` holds the MLflow settings of the study."""
    runs: list[PlannedRun] = []
    by_arm_seed: dict[tuple[str, int], PlannedRun] = {}
    for arm in spec.arms:
        config = arm.config or spec.base.config
        for seed in spec.seeds:
            datasets: list[str | None] = [*arm.each_dataset] if arm.each_dataset else [None]
            for dataset in datasets:
                folder = out / arm.name / (dataset or "") / f"seed{seed}"
                sets = {**spec.base.set, **arm.set, "train.seed": seed, "train.output_dir": str(folder)}
                if dataset is not None:
                    sets["data.datasets"] = [{"name": dataset}]
                sets.update(_steps(arm.budget or spec.budget, config, sets, spec.ranks))
                run = PlannedRun(
                    arm.name,
                    seed,
                    dataset,
                    folder,
                    arm.mode,
                    config,
                    spec.base.ds_config,
                    sets,
                    report=arm.report,
                    ranks=spec.ranks,
                )
                run.sets.update({**tracking, "tracking.run_name": run.key})
                if arm.init_from and arm.init_from.startswith("arm:"):
                    upstream = by_arm_seed[(arm.init_from[4:], seed)]
                    run.weights, run.after = upstream.out / "checkpoints", upstream.key
                elif arm.init_from:
                    run.weights = Path(arm.init_from)
                runs.append(run)
                by_arm_seed.setdefault((arm.name, seed), run)
    return runs
