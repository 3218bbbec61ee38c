"""Start from pre-trained weights, possibly with another channel count, grid, ``t_in`` or from 2-D into 3-D,
and freeze parts.

What a changed setup does to the two tensors whose shape follows it (each a named rule, logged as applied):

- ``encoder.pos_embed`` ``[1, D, *latent]`` follows the grid / patch: ``interpolate`` (default) resamples it
  to the new latent grid, bilinear (trilinear in 3-D), as DPOT's ``resize_pos_embed``; ``fresh`` keeps the new
  model's initialisation.
- ``encoder.time_agg.w`` ``[t_in, D, D]`` follows ``t_in``: ``slice`` (default) keeps the weights of the last
  ``t_in`` frames (the ones nearest the prediction), scaled by ``t_in_old / t_in`` so the sum over frames keeps
  its size; ``fresh`` re-initialises it. A longer ``t_in`` than the checkpoint's cannot be sliced: refused.
DPOT's and NESTOR's ``load_components_from_pretrained`` copy both as they are (their fine-tuning keeps grid and
``t_in``); these rules are how this system carries a checkpoint across the change. Blocks must fit exactly:
a checkpoint of another width or block layout is refused, naming the tensors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from nestor_ds.errors import CheckpointError
from nestor_ds.model.export import EXPERT_KEY, local_state_dict, read_weights
from nestor_ds.model.routing import MoEPOTScorer

log = logging.getLogger(__name__)


@dataclass
class Inflation:
    """What a 2-D -> 3-D initialisation did to each tensor of the 3-D model."""

    copied: list[str] = field(default_factory=list)  # same shape in 2-D and 3-D
    inflated: list[str] = field(default_factory=list)  # a 1x1 kernel given a third axis (1x1x1)
    fresh: list[str] = field(default_factory=list)  # left at the 3-D model's initialisation


@dataclass(frozen=True)
class Adaptation:
    """The rules for tensors whose shape follows the grid (``pos_embed``) and ``t_in`` (``time_agg``)."""

    pos_embed: str = "interpolate"  # or "fresh"
    time_agg: str = "slice"  # or "fresh"


def adapt_pos_embed(value: torch.Tensor, want: torch.Size, rule: str, path: str | Path) -> torch.Tensor | None:
    """The checkpoint's position embedding on this model's latent grid (``interpolate``), or None (``fresh``)."""
    if value.shape[:2] != want[:2] or value.dim() != len(want):
        raise CheckpointError(
            f"{path}: encoder.pos_embed is {tuple(value.shape)}, this model's {tuple(want)}: the widths differ, so "
            f"nothing but the data pipeline could carry over"
        )
    if rule == "fresh":
        log.info("fine-tuning rule pos_embed=fresh: encoder.pos_embed %s -> %s re-initialised", value.shape, want)
        return None
    mode = "trilinear" if value.dim() == 5 else "bilinear"
    out = F.interpolate(value.float(), size=tuple(want[2:]), mode=mode, align_corners=False).to(value.dtype)
    log.info(
        "fine-tuning rule pos_embed=interpolate: encoder.pos_embed latent grid %s -> %s (%s)",
        list(value.shape[2:]),
        list(want[2:]),
        mode,
    )
    return out


def adapt_time_agg(value: torch.Tensor, want: torch.Size, rule: str, path: str | Path) -> torch.Tensor | None:
    """The checkpoint's time aggregation for this model's ``t_in`` (``slice``), or None (``fresh``)."""
    t_old, t_new = value.shape[0], want[0]
    if value.shape[1:] != want[1:]:
        raise CheckpointError(
            f"{path}: encoder.time_agg.w is {tuple(value.shape)}, this model's {tuple(want)}: the widths differ"
        )
    if rule == "fresh":
        log.info("fine-tuning rule time_agg=fresh: t_in %d -> %d, encoder.time_agg.w re-initialised", t_old, t_new)
        return None
    if t_new > t_old:
        raise CheckpointError(
            f"{path}: the checkpoint aggregates t_in={t_old} frames, this model t_in={t_new}: the time aggregation "
            f"cannot be sliced to more frames than it has; set train.adapt_time_agg: fresh"
        )
    log.info(
        "fine-tuning rule time_agg=slice: t_in %d -> %d, the last %d frames' weights kept, scaled by %d/%d",
        t_old,
        t_new,
        t_new,
        t_old,
        t_new,
    )
    return value[t_old - t_new :] * (t_old / t_new)


def _adapted(
    state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], adapt: Adaptation, path: str | Path
) -> dict[str, torch.Tensor]:
    """``state`` with pos_embed and time_agg.w brought to this model's shapes by ``adapt``'s rules (or dropped)."""
    out = dict(state)
    for key, fn, rule in (
        ("encoder.pos_embed", adapt_pos_embed, adapt.pos_embed),
        ("encoder.time_agg.w", adapt_time_agg, adapt.time_agg),
    ):
        if key in state and key in own and state[key].shape != own[key].shape:
            new = fn(state[key], own[key].shape, rule, path)
            if new is None:
                del out[key]
            else:
                out[key] = new
    return out


def space_dims(state: dict[str, torch.Tensor]) -> int | None:
    """Space dimensions of the model a state dict belongs to (from its position embedding [1, D, *latent])."""
    pos = state.get("encoder.pos_embed")
    return None if pos is None else pos.dim() - 2


def _expert_count(state: dict[str, torch.Tensor]) -> int:
    """Image-level experts per layer in a consolidated state dict (global ids), 0 for a dense model."""
    ids = {(m["prefix"], int(m["id"])) for k in state if (m := EXPERT_KEY.match(k))}
    per: dict[str, int] = {}
    for prefix, gid in ids:
        per[prefix] = max(per.get(prefix, 0), gid + 1)
    return max(per.values(), default=0)


def inflate_2d_to_3d(
    model: torch.nn.Module,
    full: dict[str, torch.Tensor],
    rule: str,
    path: str | Path,
    adapt: Adaptation = Adaptation(),
) -> Inflation:
    """DPOT/NESTOR's ``load_3d_components_from_2d``: the blocks' weights (``blocks``) and, with ``blocks+time``,
    the time aggregation carry over from a 2-D model; 1x1 conv kernels become 1x1x1; the patch and position
    embeddings, normalisation features, head and class head keep the 3-D model's initialisation. Refuses,
    naming the tensors, when widths or expert counts differ."""
    cfg = getattr(model, "cfg", None)
    experts = cfg.moe.experts if cfg is not None and cfg.is_moe else 0
    have = _expert_count(full)
    if have != experts:
        raise CheckpointError(
            f"{path}: the 2-D model has {have} image-level experts per layer, this 3-D model "
            f"{experts}: the blocks cannot carry over"
        )
    own = model.state_dict()
    state = local_state_dict(model, full)
    if rule == "blocks+time" and "encoder.time_agg.w" in state:
        state = _adapted({"encoder.time_agg.w": state["encoder.time_agg.w"]}, own, adapt, path) | {
            k: v for k, v in state.items() if k != "encoder.time_agg.w"
        }
    prefixes = ("blocks.",) + (("encoder.time_agg.",) if rule == "blocks+time" else ())
    wanted = [k for k in own if k.startswith(prefixes)]
    missing = [k for k in wanted if k not in state]
    extra = [k for k in state if k.startswith(prefixes) and k not in own]
    if missing or extra:
        raise CheckpointError(
            f"{path}: the 2-D model's blocks do not match this 3-D model's (missing {missing[:4]}, "
            f"not in the 3-D model {extra[:4]}): blocks, experts or Sub-MoE experts differ"
        )
    done, out = Inflation(), {}
    for key in wanted:
        value, want = state[key], own[key].shape
        if value.shape == want:
            out[key] = value
            done.copied.append(key)
        elif value.dim() == 4 and value.shape[-2:] == (1, 1) and tuple(want) == (*value.shape, 1):
            out[key] = value.unsqueeze(-1)
            done.inflated.append(key)
        else:
            raise CheckpointError(
                f"{path}: {key} is {tuple(value.shape)} in the 2-D model, {tuple(want)} in this 3-D model "
                f"(widths differ?)"
            )
    model.load_state_dict(out, strict=False)
    done.fresh = sorted(set(own) - set(out))
    groups: dict[str, int] = {}
    for key in done.copied:
        group = ".".join(key.split(".")[:2]) + ".*"
        groups[group] = groups.get(group, 0) + 1
    log.info(
        "2-D -> 3-D (%s) from %s: %d tensors copied (%s); %d inflated to 1x1x1 (%s); %d re-initialised (%s)",
        rule,
        path,
        len(done.copied),
        ", ".join(f"{g}: {n}" for g, n in groups.items()),
        len(done.inflated),
        ", ".join(done.inflated),
        len(done.fresh),
        ", ".join(done.fresh),
    )
    return done


def load_pretrained(
    model: torch.nn.Module,
    path: str | Path,
    rule_2d_to_3d: str | None = None,
    adapt: Adaptation | None = None,
) -> list[str]:
    """Load every weight whose name and shape fit; return the names left at their fresh init.

    Encoder input and output head change shape with the channel count; they start fresh. With ``adapt``
    (fine-tuning), a changed grid or ``t_in`` goes through its rules (module docstring); without it (evaluation)
    such tensors count as not fitting. Blocks of another shape are refused. A 2-D checkpoint for a 3-D model goes
    through ``rule_2d_to_3d`` (:func:`inflate_2d_to_3d`); without one, and for a 3-D checkpoint given to a 2-D
    model, it is refused naming both.
    """
    full = read_weights(path)
    own = model.state_dict()
    have, want = space_dims(full), space_dims(own)
    if have is not None and want is not None and have != want:
        if (have, want) == (2, 3) and rule_2d_to_3d:
            return inflate_2d_to_3d(model, full, rule_2d_to_3d, path, adapt or Adaptation()).fresh
        hint = " (set train.init_2d_to_3d: blocks | blocks+time)" if (have, want) == (2, 3) else ""
        raise CheckpointError(
            f"{path} holds a {have}-D model (encoder.pos_embed {tuple(full['encoder.pos_embed'].shape)}); the "
            f"config's model is {want}-D (model.grid={list(getattr(getattr(model, 'cfg', None), 'grid', []))}){hint}"
        )
    state = local_state_dict(model, full)
    if adapt is not None:
        misfits = [k for k, v in state.items() if k.startswith("blocks.") and k in own and own[k].shape != v.shape]
        if misfits:
            k = misfits[0]
            raise CheckpointError(
                f"{path}: {len(misfits)} block tensors do not fit this model, e.g. {k} {tuple(state[k].shape)} vs "
                f"{tuple(own[k].shape)} (model.width, moe or afno settings differ from the checkpoint's)"
            )
        state = _adapted(state, own, adapt, path)
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(fitting))
    if not fitting:
        raise CheckpointError(f"{path}: no weight fits this model (is it a checkpoint of another variant?)")
    model.load_state_dict(fitting, strict=False)
    if skipped:
        log.info(
            "fine-tuning from %s: %d tensors start fresh (shape or name differs): %s",
            path,
            len(skipped),
            ", ".join(skipped[:6]) + (" ..." if len(skipped) > 6 else ""),
        )
    return skipped


def freeze(model: torch.nn.Module, parts: list[str]) -> int:
    """Freeze routers and/or the encoder; returns the frozen parameter count.

    Routers are the image-level gates, the Sub-MoE routers and, for MoE-POT, the feature extractor the
    gate reads (MoE-POT's fine-tuning freezes both and keeps the gate's BatchNorms on running statistics).
    """
    frozen = 0
    for name, p in model.named_parameters():
        router = ".gate.scorer." in name or ".router." in name or ".features." in name
        if ("routers" in parts and router) or ("encoder" in parts and name.startswith("encoder.")):
            p.requires_grad_(False)
            frozen += p.numel()
    if "routers" in parts:
        for module in model.modules():
            if isinstance(module, MoEPOTScorer):
                module.frozen = True
                module.eval()
    return frozen


def default_freeze(variant: str, configured: Sequence[str] | None) -> list[str]:
    """What fine-tuning keeps fixed when the config does not say: MoE-POT's routers, as MoE-POT does."""
    if configured is not None:
        return list(configured)
    return ["routers"] if variant == "moepot" else []
