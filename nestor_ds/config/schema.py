"""The typed run configuration: one pydantic tree, ``extra="forbid"`` everywhere.

Cross-field checks that need only the config live here as validators; checks that
also need the world size or a DeepSpeed JSON live in ``deepspeed_config.py``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nestor_ds.config.datasets import DatasetInfo, UnknownDataset, lookup, resolution_shorthand


class Strict(BaseModel):
    """A config section: unknown keys and non-finite numbers are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # lr: .inf is a typo, not a setting


class ImageMoEConfig(Strict):
    """Sample-level MoE: NESTOR's attention experts, or MoE-POT's channel-MLP experts."""

    experts: int = Field(6, gt=0, description="routed experts per MoE layer (E)")
    top_k: int = Field(2, gt=0, description="experts each sample is sent to")
    capacity_factor: float = Field(1.25, gt=0, description="slots per expert = ceil(cf * k * B / E) when dropping")
    drop_tokens: bool = Field(
        False,
        description="True: training drops routes beyond capacity (static buffers, padding rows computed, no "
        "host read; the share is logged); False (the reference's behaviour): nothing dropped and the experts "
        "run exactly the routes (at ep_size > 1 the per-expert counts are exchanged first and read by the host "
        "once per layer to size the all-to-all)",
    )
    expert_compute: Literal["grouped", "loop"] = Field(
        "grouped",
        description="grouped: all local experts (and their Sub-MoE experts) run as one grouped GEMM per "
        "layer, no host sync; loop: the earlier one-expert-at-a-time Python loop (host syncs), kept as the "
        "reference that tests and benchmarks compare against",
    )
    shared_experts: int = Field(0, ge=0, description="always-on experts (MoE-POT uses 2)")
    balance_loss: Literal["switch", "moepot"] | None = Field(
        None,
        description="switch: E * sum f_i p_i (NESTOR); moepot: mean (I_i - mean I)^2 over routing weights "
        "I_i (MoE-POT); default by variant",
    )
    temperature_schedule: Literal["constant", "linear", "exponential"] = Field(
        "constant",
        description="router softmax temperature: constant (start), linear start->end over "
        "anneal_steps, or exponential max(end, start * decay^n) (MoE-POT)",
    )
    temperature_start: float = Field(1.0, gt=0, description="router softmax temperature at n = 0")
    temperature_end: float = Field(
        1.0, gt=0, description="final temperature; also used in fine-tuning and evaluation, as MoE-POT does"
    )
    temperature_decay: float = Field(0.99, gt=0, le=1, description="exponential schedule: factor per unit")
    anneal_steps: int = Field(0, ge=0, description="linear schedule: units from start to end")
    temperature_unit: Literal["forward", "step"] = Field(
        "forward", description="what n counts: training forward passes (MoE-POT) or optimizer steps"
    )

    def temperature_at(self, n: int) -> float:
        """The router temperature at ``step`` of the annealing schedule."""
        if self.temperature_schedule == "exponential":
            return max(self.temperature_end, self.temperature_start * self.temperature_decay**n)
        if self.temperature_schedule == "linear":
            frac = min(1.0, n / self.anneal_steps) if self.anneal_steps else 1.0
            return self.temperature_start + frac * (self.temperature_end - self.temperature_start)
        return self.temperature_start

    @property
    def final_temperature(self) -> float:
        """The temperature the schedule ends at (used to fine-tune and evaluate)."""
        return self.temperature_start if self.temperature_schedule == "constant" else self.temperature_end

    @model_validator(mode="after")
    def _top_k_fits(self) -> "ImageMoEConfig":
        if self.top_k > self.experts:
            raise ValueError(f"top_k={self.top_k} is larger than experts={self.experts}")
        return self


class SubMoEConfig(Strict):
    """Token-level MoE of SwiGLU experts inside each attention expert."""

    experts: int = Field(6, gt=0, description="routed SwiGLU experts (E')")
    top_k: int = Field(2, gt=0, description="experts per token (k')")
    shared_experts: int = Field(1, ge=0, description="always-on SwiGLU experts")

    @model_validator(mode="after")
    def _top_k_fits(self) -> "SubMoEConfig":
        if self.top_k > self.experts:
            raise ValueError(f"top_k={self.top_k} is larger than experts={self.experts}")
        return self


class AblationConfig(Strict):
    """Switches that remove parts of NESTOR for ablation studies."""

    sub_moe: bool = Field(True, description="False: a dense SwiGLU FFN inside each attention expert")
    shared_afno: bool = Field(True, description="False: drop the always-on AFNO path")
    load_balancing: bool = Field(True, description="False: no load-balancing loss at either level")


class ModelConfig(Strict):
    """The model: variant, sizes, grid, patches, MoE settings."""

    variant: Literal["nestor", "dpot", "moepot"] = Field("nestor", description="model family (registry key)")
    grid: list[int] = Field(
        [64, 64],
        min_length=2,
        max_length=3,
        description="grid the model sees, one size per space axis ([X, Y] or [X, Y, Z]); its length is the "
        "number of space dimensions (2-D or 3-D model). resolution: N is shorthand for [N, N]",
    )
    patch_size: int | list[int] = Field(
        8,
        description="patch edge: one for every axis, or one per axis (e.g. [8, 4] for a 512 x 128 grid); "
        "tokens = prod(grid / patch_size)",
    )
    width: int = Field(512, gt=0, description="token width D")
    heads: int = Field(8, gt=0, description="attention heads in each attention expert")
    blocks: int = Field(2, gt=0, description="nested-MoE (or DPOT) blocks")
    afno_modes: int | list[int] = Field(
        32,
        description="lowest Fourier modes kept: one count for x and y (z: afno_modes_z), or one per axis; an axis "
        "with fewer keeps all it has",
    )
    afno_modes_z: int = Field(
        8, gt=0, description="3-D only: Fourier modes kept along the third space axis (DPOT-3D's AFNO3D default)"
    )
    afno_blocks: int = Field(8, gt=0, description="diagonal blocks of the AFNO complex MLP")
    mlp_ratio: float = Field(1.0, gt=0, description="hidden width of MLPs / SwiGLU experts as a multiple of D")
    t_in: int = Field(10, gt=0, description="input frames")
    t_out: int = Field(1, gt=0, description="frames predicted per step")
    channels: int = Field(4, gt=0, description="physical channels (after padding to the common count)")
    decoder_width: int = Field(32, gt=0, description="channels of the output projection head")
    attention: Literal["auto", "sdpa", "flash"] = Field(
        "auto", description="auto: flash-attn on CUDA half precision when installed, else SDPA"
    )
    attention_dropout: float = Field(0.0, ge=0, lt=1, description="applied in training only")
    fusion: Literal["sum", "gated", "mean"] = Field("sum", description="how MoE, AFNO and input paths combine")
    compile: bool = Field(
        False,
        description="torch.compile every block (the graph breaks around the all-to-all "
        "and grouped GEMMs outside bf16); off by default until measured faster on a GPU",
    )
    moe: ImageMoEConfig = Field(default_factory=ImageMoEConfig)
    sub_moe: SubMoEConfig = Field(default_factory=SubMoEConfig)
    ablation: AblationConfig = Field(default_factory=AblationConfig)
    normalize: Literal["none", "sample", "stats"] = Field(
        "none",
        description="none: the fields as stored (DPOT's default); sample: DPOT's per-sample normalisation with "
        "AdaIN-style rescaling (true means this); stats: each set's train-split channel mean and std from its "
        "manifest (the model sees (x - mean) / std and predicts in those units, scaled back before the loss)",
    )
    residual: bool = Field(
        False,
        description="predict the change from the last input frame (output = last frame + "
        "head, the head in normalised units when model.normalize); False: DPOT's absolute output",
    )
    embed_width: int | None = Field(
        None,
        gt=0,
        description="hidden channels of the patch embedding; None: DPOT's C * patch + 3 (3-D: + 4; narrower "
        "than the C * patch^dims values of a patch; a wider one keeps more of each patch)",
    )
    n_cls: int = Field(12, ge=0, description="outputs of DPOT's data-set classifier head (0: no head)")

    @model_validator(mode="before")
    @classmethod
    def _resolution_shorthand(cls, data: Any) -> Any:
        data = resolution_shorthand(data, "model.grid")  # configs and checkpoints written before model.grid
        if isinstance(data, dict) and isinstance(data.get("normalize"), bool):  # written when it was a flag
            data = data | {"normalize": "sample" if data["normalize"] else "none"}
        return data

    @model_validator(mode="after")
    def _shapes_fit(self) -> "ModelConfig":
        if self.moe.balance_loss is None:
            self.moe.balance_loss = "moepot" if self.variant == "moepot" else "switch"
        for name in ("patch_size", "afno_modes"):
            value = getattr(self, name)
            values = value if isinstance(value, list) else [value]
            if isinstance(value, list) and len(value) != self.dims:
                raise ValueError(f"{name}={value}: one per axis of grid={self.grid}, or one number for all")
            if any(v <= 0 for v in values):
                raise ValueError(f"{name}={value} must be positive")
        if any(n <= 0 or n % p for n, p in zip(self.grid, self.patch)):
            raise ValueError(
                f"grid={self.grid}: every size must be a positive multiple of patch_size={self.patch_size}"
            )
        if self.variant == "moepot" and self.dims != 2:
            raise ValueError(f"model.variant=moepot is 2-D only (MoE-POT has no 3-D form), got grid={self.grid}")
        if self.width % self.heads:
            raise ValueError(f"width={self.width} is not divisible by heads={self.heads}")
        if self.width % self.afno_blocks:
            raise ValueError(f"width={self.width} is not divisible by afno_blocks={self.afno_blocks}")
        return self

    @property
    def dims(self) -> int:
        """Space dimensions of the model (2 or 3): the length of ``grid``."""
        return len(self.grid)

    @property
    def patch(self) -> tuple[int, ...]:
        """The patch edge per space axis."""
        p = self.patch_size
        return tuple(p) if isinstance(p, list) else (p,) * self.dims

    @property
    def latent(self) -> tuple[int, ...]:
        """The token grid: ``grid / patch_size`` per axis."""
        return tuple(n // p for n, p in zip(self.grid, self.patch))

    @property
    def tokens(self) -> int:
        """Patches per sample."""
        return math.prod(self.latent)

    def input_shape(self, batch: int) -> tuple[int, ...]:
        """The model's input ``[B, *grid, t_in, channels]``."""
        return (batch, *self.grid, self.t_in, self.channels)

    @property
    def is_moe(self) -> bool:
        """Whether the variant has image-level experts."""
        return self.variant in ("nestor", "moepot")


class DatasetEntry(Strict):
    """One data set of a run: registry name, mixing weight, shard location."""

    name: str = Field(description="registry name, or a key of data.custom")
    weight: float | None = Field(None, gt=0, description="mixing weight; default: the registry's")
    shards: str | None = Field(
        None, description="shard folder or URL (http(s)://, pipe:...{path}...); default: <data.root>/<name>"
    )


class DataConfig(Strict):
    """The data of a run: sets, shard root, splits, windows, noise and padding."""

    datasets: list[DatasetEntry] = Field(min_length=1, description="data sets mixed in this run")
    root: str = Field(
        "data/shards",
        description="where shard folders live: a folder, an http(s):// URL, or a pipe: command "
        "with {path}, e.g. 'pipe:aws s3 cp s3://bucket/shards/{path} -'",
    )
    train_split: str = Field("train", description="split folder trained on")
    test_split: str = Field("test", description="split folder evaluated on")
    noise_scale: float = Field(5e-4, ge=0, description="denoising noise, relative to the input norm")
    noise_norm: Literal["l2", "rms", "channel_rms", "set_std"] = Field(
        "l2",
        description="l2: DPOT's noise, scale x per-channel L2 norm over X, Y, T, on every point; "
        "rms: scale x RMS over real points (all channels), real points only; channel_rms: scale x each channel's "
        "RMS per sample, real points and channels only; set_std: scale x the data set's channel std (its "
        "manifest), real points and channels only",
    )
    mixing: Literal["size_weighted", "weight"] = Field(
        "size_weighted",
        description="pick a data set with probability proportional to n_train x weight (DPOT) or to weight alone",
    )
    subset: Literal["dpot", "all"] = Field(
        "dpot",
        description="dpot: train on the first dpot_train and evaluate the first dpot_test trajectories, "
        "rolling out rollout frames, as DPOT's master file; all: every trajectory and frame",
    )
    pad_value: float = Field(
        1.0,
        description="value of padded (missing) channels, and of grid points a sample does not fill; DPOT pads with 1",
    )
    resize: Literal["keep_aspect", "stretch"] = Field(
        "keep_aspect",
        description="how a sample whose grid is not the model's is resized: keep_aspect = to the largest region "
        "of the model grid with the data's aspect ratio, placed at the origin, the rest padded and masked out of "
        "loss, metric and feedback; stretch = to the whole model grid (DPOT's resize; the same when aspects match)",
    )
    score_channels: Literal["predicted", "all"] = Field(
        "predicted", description="predicted: leave input-only channels (CFDBench's mask) out of loss and metric"
    )
    score_points: Literal["original", "all"] = Field(
        "original",
        description="evaluation on sets stored below the model resolution: original = only the grid "
        "points the data had (DPOT's stride mask); all = every interpolated point",
    )
    workers: int | None = Field(
        None,
        ge=0,
        description="loader worker processes per rank; None: 4 on a GPU (at most the CPU cores per "
        "local rank), 0 on CPU. The stream depends on ranks x workers: resume with the same count",
    )
    windows_per_trajectory: int = Field(
        8,
        ge=1,
        description="training windows cut from each decoded trajectory (distinct random starts while it has "
        "that many) before the next is read; 1 is DPOT's sampling (one random window per trajectory visit); more "
        "decodes less per sample",
    )
    on_bad_sample: Literal["raise", "skip"] = Field(
        "raise",
        description="raise: stop naming shard and sample; skip: drop it (an unreadable tar: the rest of "
        "its shard), count it, log it",
    )
    max_bad_samples: int = Field(
        20,
        gt=0,
        description="skip mode: bad samples or shards in a row, per data set "
        "and loader slot, before the run stops naming the data set",
    )
    verify_checksums: bool = Field(
        True,
        description="check each shard's sha256 against its manifest when a process first opens it, before any of "
        "its samples is used (a remote shard: as it streams, a mismatch stops the run); start-up checks sizes only",
    )
    custom: dict[str, DatasetInfo] = Field(default_factory=dict, description="data sets not in the registry")

    @model_validator(mode="after")
    def _known_and_unique(self) -> "DataConfig":
        seen: set[str] = set()
        for i, entry in enumerate(self.datasets):
            try:
                lookup(entry.name, self.custom)
            except UnknownDataset as err:
                raise ValueError(f"datasets[{i}]: {err}") from None
            if entry.name in seen:
                raise ValueError(f"datasets[{i}]: data set {entry.name!r} is listed twice")
            seen.add(entry.name)
        return self

    def info(self, name: str) -> DatasetInfo:
        """The registry facts of data set ``name`` (``data.custom`` first)."""
        return lookup(name, self.custom)


class OptimizerConfig(Strict):
    """Adam and its one-cycle schedule."""

    lr: float = Field(1e-3, gt=0, description="peak learning rate of the one-cycle schedule")
    betas: tuple[float, float] = Field((0.9, 0.9), description="Adam betas")
    weight_decay: float = Field(1e-6, ge=0, description="on matrices only, not norms and biases")
    eps: float = Field(1e-8, gt=0, description="Adam epsilon")
    warmup_fraction: float = Field(0.2, ge=0, le=1, description="one-cycle warm-up share of all steps")


class TrainConfig(Strict):
    """The training loop: steps, batches, losses, checkpoints, guards, time limit."""

    steps: int | None = Field(None, gt=0, description="optimizer steps (give steps or epochs)")
    epochs: int | None = Field(None, gt=0, description="passes over the training trajectories (or steps)")
    micro_batch_per_rank: int = Field(8, gt=0, description="samples per rank per forward")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    aux_weight_image: float = Field(0.03, ge=0, description="image-level load-balancing weight")
    aux_weight_token: float = Field(1e-4, ge=0, description="token-level load-balancing weight")
    loss_reduction: Literal["reference", "mean"] = Field(
        "reference",
        description="reference: L2RE summed over the micro-batch, aux losses summed over layers "
        "(token-level also over active experts), as the NESTOR/MoE-POT trainers; mean: everything averaged",
    )
    cls_weight: float = Field(0.0, ge=0, description="cross-entropy weight of the data-set classifier (DPOT: 0)")
    t_ar: int | None = Field(
        None,
        gt=0,
        description="target frames per training window (DPOT's T_ar): the loss unrolls t_ar / t_out model "
        "steps, feeding predictions back by the evaluation's rule, noise added again at every step (DPOT); None: "
        "t_out (one step, DPOT's T_ar 1)",
    )
    push_forward: bool = Field(
        False,
        description="unrolled training: no gradient through the earlier steps (each "
        "step learns from inputs of the model's own making; Brandstetter et al.)",
    )
    patch_jitter: bool = Field(
        False,
        description="shift the patch grid by a random 0..patch-1 points per sample and "
        "axis in training (Walrus): rolled on periodic data sets, padded (edge) and cropped "
        "on the others; evaluation never jitters",
    )
    grad_clip: float = Field(10000.0, ge=0, description="0 disables clipping")
    seed: int = Field(0, description="weights, data order, windows and noise all derive from it")
    log_every: int = Field(10, gt=0, description="optimizer steps between log lines and logged metrics")
    max_bad_steps: int = Field(
        3,
        gt=0,
        description="steps in a row with a non-finite loss or gradient norm (each "
        "skipped on every rank, never reaching the weights) before the run stops, naming them",
    )
    on_nonfinite: Literal["stop", "rollback"] = Field(
        "stop",
        description="after train.max_bad_steps bad steps in a row: stop, or roll back to the newest intact "
        "checkpoint with the lr multiplied by train.rollback_lr_factor (at most train.max_rollbacks times)",
    )
    rollback_lr_factor: float = Field(0.5, gt=0, lt=1, description="lr multiplier applied at each rollback")
    max_rollbacks: int = Field(2, ge=0, description="rollbacks before the run stops after all")
    count_host_syncs: bool = Field(
        False,
        description="count the device reads (.item(), .tolist(), ...) of the "
        "last step of each logging interval: perf/host_syncs, and a log line naming them",
    )
    checkpoint_every: int = Field(1000, gt=0, description="optimizer steps between checkpoints")
    keep_checkpoints: int = Field(3, gt=0, description="newest checkpoints kept on disk")
    checkpoint_dir: Path | None = Field(None, description="default: <output_dir>/checkpoints")
    eval_every: int = Field(1000, gt=0, description="optimizer steps between evaluations")
    time_limit_s: float | None = Field(
        None,
        gt=0,
        description="wall-time budget: the run ends (checkpoint, final "
        "evaluation) at the first step boundary past it, all ranks together",
    )
    fit_steps_to_time: bool = Field(
        False,
        description="with train.time_limit_s: after 20 steps the run measures its "
        "step time (agreed by all ranks), sets train.steps to what fits in the limit and "
        "rebuilds the one-cycle schedule for that length (wall-time budgets of studies)",
    )
    eval_trajectories: int | None = Field(None, gt=0, description="cap on test trajectories per data set")
    output_dir: Path = Field(Path("runs/default"), description="checkpoints, eval tables, plots, MLflow db")
    init_from: Path | None = Field(
        None, description="fine-tuning: a DeepSpeed checkpoint directory or a consolidated .safetensors file"
    )
    init_2d_to_3d: Literal["blocks", "blocks+time"] | None = Field(
        None,
        description="fine-tuning a 3-D model from a 2-D checkpoint (DPOT/NESTOR's load_3d_components_from_2d): "
        "blocks copies every block (1x1 kernels inflated to 1x1x1), blocks+time also the time aggregation; patch "
        "and position embeddings, head and class head start fresh",
    )
    adapt_pos_embed: Literal["interpolate", "fresh"] = Field(
        "interpolate",
        description="fine-tuning on another grid or patch: the position embedding resampled to the new latent grid "
        "(bilinear / trilinear), or fresh",
    )
    adapt_time_agg: Literal["slice", "fresh"] = Field(
        "slice",
        description="fine-tuning with a shorter t_in: the time aggregation keeps the last t_in frames' weights "
        "(scaled by t_in_old / t_in), or fresh; a longer t_in needs fresh",
    )
    freeze: list[Literal["routers", "encoder"]] | None = Field(
        None, description="fine-tuning: parts kept fixed; default: routers for moepot (as MoE-POT), none otherwise"
    )

    @model_validator(mode="after")
    def _one_length(self) -> "TrainConfig":
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps or epochs")
        return self

    def target_frames(self, t_out: int) -> int:
        """Frames after the input window a training sample carries: t_ar, or t_out."""
        return self.t_ar if self.t_ar is not None else t_out


class ParallelConfig(Strict):
    """Expert parallelism, ZeRO stage and collective timeout."""

    ep_size: int = Field(1, gt=0, description="ranks the image-level experts are sharded over")
    zero_stage: Literal[0, 1, 2, 3] | None = Field(None, description="default: the ds_config's")
    precision: Literal["fp32", "bf16", "fp16"] | None = Field(None, description="default: the ds_config's")
    collective_timeout_s: float = Field(
        600,
        gt=0,
        description="seconds any collective of any process group (DeepSpeed's expert groups too) waits "
        "for a rank before the run stops, naming the ranks that fell behind (torch's default: 30 min)",
    )


class TrackingConfig(Strict):
    """MLflow: store, experiment, run name."""

    enabled: bool = Field(True, description="False: no MLflow (tables, plots and checkpoints are still written)")
    uri: str | None = Field(
        None, description="MLflow tracking URI; default MLFLOW_TRACKING_URI, else sqlite:///<output_dir>/mlflow.db"
    )
    experiment: str = Field("nestor", description="MLflow experiment")
    run_name: str | None = Field(None, description="MLflow run name (default: generated)")
    parent_run_id: str | None = Field(None, description="MLflow run this one is a child of (a study's parent run)")


class RunConfig(Strict):
    """One run's whole configuration; it also derives the DeepSpeed numbers."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    train: TrainConfig
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> "RunConfig":
        m = self.model
        if m.is_moe and m.moe.experts % self.parallel.ep_size:
            raise ValueError(
                f"parallel.ep_size={self.parallel.ep_size} does not divide model.moe.experts={m.moe.experts}"
            )
        if m.is_moe and self.parallel.zero_stage == 3:
            raise ValueError("parallel.zero_stage=3 is not supported with MoE (DeepSpeed MoE needs stage 0, 1 or 2)")
        if self.train.init_2d_to_3d is not None and m.dims != 3:
            raise ValueError(f"train.init_2d_to_3d is for 3-D models; model.grid={m.grid} is {m.dims}-D")
        if self.train.patch_jitter and m.dims != 2:
            raise ValueError(f"train.patch_jitter is 2-D only; model.grid={m.grid} is {m.dims}-D")
        t_ar = self.train.t_ar
        if t_ar is not None and t_ar % m.t_out:
            raise ValueError(
                f"train.t_ar={t_ar} is not a multiple of model.t_out={m.t_out} (each unrolled step "
                f"predicts t_out frames)"
            )
        window = m.t_in + self.train.target_frames(m.t_out)
        what = "t_in+t_ar" if t_ar is not None else "t_in+t_out"
        for entry in self.data.datasets:
            frames = self.data.info(entry.name).frames
            if window > frames:
                raise ValueError(
                    f"data set {entry.name!r}: window {what}={window} is longer than its {frames}-frame trajectories"
                )
        if self.train.cls_weight > 0 and m.n_cls < len(self.data.datasets):
            raise ValueError(
                f"train.cls_weight={self.train.cls_weight} needs model.n_cls >= "
                f"{len(self.data.datasets)} (one class per data set), got {m.n_cls}"
            )
        for entry in self.data.datasets:
            info = self.data.info(entry.name)
            if len(info.grid) != m.dims:
                raise ValueError(
                    f"data set {entry.name!r} is {len(info.grid)}-D (grid {list(info.grid)}) but the model is "
                    f"{m.dims}-D (model.grid={m.grid})"
                )
            c = info.channels
            if c > m.channels:
                raise ValueError(f"data set {entry.name!r} has {c} channels, more than model.channels={m.channels}")
        return self

    @property
    def checkpoint_dir(self) -> Path:
        """Where the run's checkpoints go (``train.checkpoint_dir`` or ``<output_dir>/checkpoints``)."""
        return self.train.checkpoint_dir or self.train.output_dir / "checkpoints"
