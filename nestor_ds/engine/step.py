"""The maths of one training micro-step: denoising noise, patch jittering, the autoregressive unroll and the loss.

One micro-batch carries ``t_in`` input frames and ``train.t_ar`` (default ``t_out``) target frames. The model
is applied ``t_ar / t_out`` times; each prediction is fed back by the evaluator's rule (``data.feedback``),
noise is added to the window before every application (DPOT's ``train_temporal.py``), and the data terms of
all steps are summed (``loss_reduction: reference``, as DPOT) or averaged (``mean``). With
``train.push_forward`` what is fed back carries no gradient: each step learns from inputs of the model's own
making without back-propagating through the steps before it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from nestor_ds.config.schema import RunConfig
from nestor_ds.data.feedback import Feedback, inside_region
from nestor_ds.data.loader import Source
from nestor_ds.data.set_stats import SetStats
from nestor_ds.engine.losses import l2re
from nestor_ds.model.output import ModelOutput


@dataclass(frozen=True)
class SetFacts:
    """What the step needs of each training data set, indexed by ``dataset_id``."""

    roles: torch.Tensor  # [sets, C] int8: data.feedback roles
    periodic: torch.Tensor  # [sets] bool
    std: torch.Tensor  # [sets, C] channel std from the manifests (0 on padded channels)
    units: SetStats | None = None  # model.normalize=stats: each set's train-split mean and std

    @classmethod
    def of(cls, sources: list[Source], channels: int, device: torch.device, normalize: str = "none") -> "SetFacts":
        """The per-set facts of ``sources`` on ``device``."""
        std = torch.zeros(len(sources), channels)
        for i, s in enumerate(sources):
            values = s.manifest.get("std") or []
            std[i, : len(values)] = torch.tensor(values[:channels], dtype=torch.float32)
        units = None
        if normalize == "stats":
            units = SetStats.of([s.stats or (s.manifest["mean"], s.manifest["std"]) for s in sources], channels)
            units = units.to(device)
        return cls(
            torch.stack([s.roles(channels) for s in sources]).to(device),
            torch.tensor([s.periodic for s in sources], device=device),
            std.to(device),
            units,
        )


@dataclass
class StepResult:
    """One micro-step's loss (what is back-propagated), the first step's per-sample L2RE and model output."""

    loss: torch.Tensor
    per_sample: torch.Tensor  # [B] one step ahead, for the per-data-set training metric
    out: ModelOutput


def add_noise(
    x: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    gen: torch.Generator,
    norm: str = "l2",
    std: torch.Tensor | None = None,
) -> torch.Tensor:
    """Denoising pre-training noise on x [B, X, Y, T, C]; ``mask`` [B, X, Y, 1, C] marks scored points/channels.

    ``l2`` (DPOT): ``scale * ||x||`` with the L2 norm per sample and channel over X, Y, T, added at every point
    and channel. ``rms``: ``scale * RMS(x)`` per sample (all channels), scored points and channels only.
    ``channel_rms``: ``scale * RMS`` of each channel per sample over its scored points, there only.
    ``set_std``: ``scale *`` the data set's channel std ``std`` [B, C], scored points and channels only."""
    if scale <= 0:
        return x
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float32, device=x.device)  # made on the device
    if norm == "l2":
        over = tuple(range(1, x.dim() - 1))  # space and time
        l2 = x.float().square().sum(dim=over, keepdim=True).sqrt()  # [B, 1, .., 1, C]
        return x + (scale * l2 * noise).to(x.dtype)
    m = mask.float()
    if norm == "rms":
        rms = x.float().square().flatten(1).mean(1).sqrt().view((-1,) + (1,) * (x.dim() - 1))
        return x + (scale * rms * noise * m).to(x.dtype)
    if norm == "channel_rms":
        over = tuple(range(1, x.dim() - 1))
        count = m.sum(dim=over, keepdim=True) * x.shape[-2]
        ref = ((x.float().square() * m).sum(dim=over, keepdim=True) / count.clamp_min(1)).sqrt()
    elif norm == "set_std":
        if std is None:
            raise ValueError("noise_norm=set_std needs the data sets' channel std")
        ref = std.float().view((x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],))
    else:
        raise ValueError(f"unknown noise_norm {norm!r}")
    return x + (scale * ref * noise * m).to(x.dtype)


def jitter(
    frames: torch.Tensor,
    mask: torch.Tensor,
    periodic: torch.Tensor,
    gen: torch.Generator,
    patch: int | tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch jittering (Walrus): shift each sample's frames [B, X, Y, T, C] and mask [B, X, Y, 1, C] by a random
    0..patch-1 points per axis; rolled where ``periodic`` [B], else padded with the edge values and cropped,
    with the padded band left out of the mask."""
    b, nx, ny = frames.shape[:3]
    px, py = (patch, patch) if isinstance(patch, int) else patch
    if px == py:
        shift = torch.randint(0, px, (b, 2), generator=gen, device=frames.device)
    else:  # one bound per axis
        shift = torch.cat([torch.randint(0, p, (b, 1), generator=gen, device=frames.device) for p in (px, py)], dim=1)
    ix = torch.arange(nx, device=frames.device)[None] - shift[:, :1]  # [B, X]: source row of each row
    iy = torch.arange(ny, device=frames.device)[None] - shift[:, 1:]
    wrap = periodic.view(b, 1)
    inside = (ix >= 0)[:, :, None] & (iy >= 0)[:, None, :]  # [B, X, Y]
    ix = torch.where(wrap, ix % nx, ix.clamp_min(0))
    iy = torch.where(wrap, iy % ny, iy.clamp_min(0))
    rows = torch.arange(b, device=frames.device)[:, None, None]
    moved = frames[rows, ix[:, :, None], iy[:, None, :]]
    kept = mask[rows, ix[:, :, None], iy[:, None, :]] * (inside | wrap.view(b, 1, 1))[..., None, None]
    return moved, kept.to(mask.dtype)


def training_loss(cfg: RunConfig, out: ModelOutput, per_sample: torch.Tensor, dataset_id: torch.Tensor) -> torch.Tensor:
    """Data term plus weighted aux terms, reduced as ``train.loss_reduction`` says (README: loss reduction)."""
    t = cfg.train
    aux_image, aux_token = out.aux_losses(t.loss_reduction)
    data = per_sample.sum() if t.loss_reduction == "reference" else per_sample.mean()
    loss = data + t.aux_weight_image * aux_image + t.aux_weight_token * aux_token
    if t.cls_weight > 0 and "cls_logits" in out.extras:
        ce = torch.nn.functional.cross_entropy(
            out.extras["cls_logits"].float(), dataset_id, reduction="sum" if t.loss_reduction == "reference" else "mean"
        )
        loss = loss + t.cls_weight * ce
    return loss


def in_set_units(
    forward: Callable[[torch.Tensor], ModelOutput], units: SetStats, ids: torch.Tensor | int
) -> Callable[[torch.Tensor], ModelOutput]:
    """``forward`` on fields in the data's units: inputs scaled to each sample's set units, the prediction back."""

    def call(x: torch.Tensor) -> ModelOutput:
        out = forward(units.to_model(x, ids))
        return replace(out, pred=units.from_model(out.pred, ids))

    return call


def unrolled_step(
    forward: Callable[[torch.Tensor], ModelOutput],
    cfg: RunConfig,
    batch: dict[str, torch.Tensor],
    facts: SetFacts,
    gen: torch.Generator,
    noise_scale: float,
    dtype: torch.dtype,
) -> StepResult:
    """Forward (``t_ar / t_out`` times) and loss of one micro-batch; x [B, *space, t_in, C], y [B, *space, t_ar, C]."""
    m, t = cfg.model, cfg.train
    x, y, mask, ids = batch["x"], batch["y"], batch["mask"], batch["dataset_id"]
    unrolled = y.shape[-2] > m.t_out  # only then is a predicted frame fed back, and the region needed
    inside = inside_region(batch["extent"], x.shape[1:-2]) if unrolled and "extent" in batch else None
    if t.patch_jitter:
        with_inside = mask if inside is None else torch.cat([mask, inside.to(mask.dtype)], dim=-1)
        both, moved = jitter(torch.cat([x, y], dim=-2), with_inside, facts.periodic[ids], gen, m.patch)
        x, y, mask = both[..., : m.t_in, :], both[..., m.t_in :, :], moved[..., : mask.shape[-1]]
        inside = None if inside is None else moved[..., -1:] > 0  # the region moves with the sample
    feedback = Feedback(facts.roles[ids], cfg.data.pad_value, inside)
    if facts.units is not None:  # model.normalize=stats: the model works in each set's units, the loss in the data's
        forward = in_set_units(forward, facts.units, ids)
    std = facts.std[ids] if cfg.data.noise_norm == "set_std" else None
    steps = y.shape[-2] // m.t_out
    losses, first, first_out = [], None, None
    for k in range(steps):
        x = add_noise(x, mask, noise_scale, gen, cfg.data.noise_norm, std)
        out = forward(x.to(dtype))
        target = y[..., k * m.t_out : (k + 1) * m.t_out, :]
        per_sample = l2re(out.pred, target, mask)
        losses.append(training_loss(cfg, out, per_sample, ids))
        if k == 0:
            first, first_out = per_sample, out
        if k + 1 < steps:
            fed = out.pred.detach() if t.push_forward else out.pred
            x = feedback.next_window(x, fed.to(x.dtype), target)
    if first is None or first_out is None:
        raise ValueError(f"the target holds {y.shape[-2]} frames, fewer than one bundle of t_out={m.t_out}")
    loss = torch.stack(losses).sum() if t.loss_reduction == "reference" else torch.stack(losses).mean()
    return StepResult(loss, first, first_out)
