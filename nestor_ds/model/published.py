"""Published DPOT and MoE-POT checkpoints into this project's format.

A published checkpoint is ``torch.save({"model": state_dict})`` of thu-ml/DPOT's ``DPOTNet`` (or
``DPOTNet3D``, ``models/dpot3d.py``, whose layout is the same with 3-D kernels) or haiyangxin/MoEPOT's
``MoEPOTNet``. The architecture is read from the tensors' own shapes, the
names are mapped onto ``model.variant: dpot`` / ``moepot``, every tensor must find its place
(nothing left over, nothing missing, no shape mismatch), and the result is written as a
consolidated safetensors file (experts under their global ids, so it loads at any ep_size)
beside the run config that builds the model.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from nestor_ds.errors import CheckpointError

Kind = Literal["dpot", "moepot", "dpot3d"]
log = logging.getLogger(__name__)

# The published sizes (DPOT paper table / released checkpoints; MoE-POT's pre-training configs) and the
# parameter counts of the reference models at those sizes (../shared/fixtures, counted from the checkpoints).
PUBLISHED: dict[Kind, dict[str, dict[str, Any]]] = {
    "dpot": {
        "Ti": {"width": 512, "blocks": 4, "afno_blocks": 4, "mlp_ratio": 1.0, "decoder_width": 32, "params": 7534643},
        "S": {"width": 1024, "blocks": 6, "afno_blocks": 8, "mlp_ratio": 1.0, "decoder_width": 32, "params": 30801459},
        "M": {
            "width": 1024,
            "blocks": 12,
            "afno_blocks": 8,
            "mlp_ratio": 4.0,
            "decoder_width": 32,
            "params": 122125875,
        },
        "L": {
            "width": 1536,
            "blocks": 24,
            "afno_blocks": 16,
            "mlp_ratio": 4.0,
            "decoder_width": 128,
            "params": 509018739,
        },
        "H": {
            "width": 2048,
            "blocks": 27,
            "afno_blocks": 8,
            "mlp_ratio": 4.0,
            "decoder_width": 128,
            "params": 1031082099,
        },
    },
    "moepot": {
        "Ti": {"width": 512, "blocks": 4, "afno_blocks": 4, "mlp_ratio": 1.0, "decoder_width": 32},
        "S": {"width": 1024, "blocks": 6, "afno_blocks": 8, "mlp_ratio": 1.0, "decoder_width": 32, "params": 166338963},
        "M": {"width": 1024, "blocks": 8, "afno_blocks": 8, "mlp_ratio": 2.0, "decoder_width": 32},
    },
}
NESTOR_REFERENCE_TINY_PARAMS = 83120263  # Event-AHU/OpenFusion NESTOR at its published Tiny configuration
MOEPOT_TOP_K = 4  # hard-coded in MoE-POT's Block; not visible in a checkpoint
DEFAULT_MODES = 32  # DPOTNet's default; a checkpoint does not record it (see infer_model_config)
DEFAULT_MODES_Z = 8  # DPOTNet3D's AFNO3D keeps temporal_modes=8 along the third axis (its Block never sets it)

_RULES: list[tuple[str, str]] = [
    (r"^pos_embed$", "encoder.pos_embed"),
    (r"^patch_embed\.", "encoder.patch_embed."),
    (r"^time_agg_layer\.", "encoder.time_agg."),
    (r"^scale_feats_(mu|sigma)\.", r"encoder.scale_feats_\1."),
    (r"^out_layer\.", "head.out_layer."),
    (r"^cls_head\.", "cls_head.layers."),
    (r"^blocks\.(\d+)\.MoE\.feature_extractor\.conv\.", r"blocks.\1.features."),
    (r"^blocks\.(\d+)\.MoE\.gating\.gate\.", r"blocks.\1.moe.deepspeed_moe.gate.scorer.gate."),
    (r"^blocks\.(\d+)\.MoE\.shared_experts\.(\d+)\.conv\.", r"blocks.\1.shared.\2."),
    (
        r"^blocks\.(\d+)\.MoE\.experts\.(\d+)\.conv\.0\.",
        r"blocks.\1.moe.deepspeed_moe.experts.deepspeed_experts.\2.proj.",
    ),
]


def our_name(name: str) -> str:
    """The name a published tensor has in our model (DPOT's block names are ours already)."""
    for pattern, repl in _RULES:
        new, n = re.subn(pattern, repl, name)
        if n:
            return new
    return name


def read_published(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a published checkpoint, loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # MoE-POT's own trainer also pickles its argparse Namespace: a plain attribute holder, safe to allow
        with torch.serialization.safe_globals([argparse.Namespace]):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is the same user error
        raise CheckpointError(f"{path}: not a loadable PyTorch checkpoint with weights_only=True ({err})") from None
    state = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected {{'model': state_dict}} or a state dict of tensors")
    prefix = re.compile(r"^(module\.|_orig_mod\.)+")  # DDP / torch.compile wrappers
    return {prefix.sub("", k): v for k, v in state.items()}


def _shape(state: dict[str, torch.Tensor], key: str, path: str) -> torch.Size:
    if key not in state:
        raise CheckpointError(f"{path}: tensor {key!r} missing: not a DPOTNet/MoEPOTNet checkpoint")
    return state[key].shape


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    ids = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(ids) + 1 if ids else 0


def infer_model_config(
    kind: Kind, state: dict[str, torch.Tensor], modes: int | None = None, path: str = "checkpoint"
) -> dict[str, Any]:
    """``model:`` settings read from tensor shapes.

    ``modes`` is not stored in a checkpoint (the AFNO weights do not depend on it). Every mode
    is kept once modes >= the latent grid, which is the case for all published models (16x16
    latent grid, modes 32); for smaller modes pass the training value.
    """
    pos = _shape(state, "pos_embed", path)
    width, latent, dims = pos[1], list(pos[2:]), len(pos) - 2
    embed = _shape(state, "patch_embed.proj.0.weight", path)
    extra = dims + 1  # grid channels: one per space axis and one for time
    patch, c_in, embed_hidden = embed[-1], embed[1] - extra, embed[0]
    c_out, rest = divmod(embed_hidden - extra, patch)
    if rest or c_in != c_out:
        raise CheckpointError(
            f"{path}: {c_in} input and {(embed_hidden - extra) / patch:g} output channels; this project's "
            f"models map C channels to C channels"
        )
    if "time_agg_layer.gamma" not in state:
        raise CheckpointError(
            f"{path}: time aggregator without 'gamma' ('mlp' type); only DPOT's 'exp_mlp' is supported"
        )
    out = _shape(state, "out_layer.4.weight", path)[0]
    if out % c_out:
        raise CheckpointError(f"{path}: out_layer produces {out} channels, not a multiple of {c_out}")
    blocks = _count(state, r"^blocks\.(\d+)\.")
    cfg: dict[str, Any] = {
        "variant": kind,
        "grid": [n * patch for n in latent],
        "patch_size": patch,
        "width": width,
        "heads": math.gcd(8, width),
        "blocks": blocks,
        "afno_blocks": _shape(state, "blocks.0.filter.w1", path)[1],
        "afno_modes": modes or DEFAULT_MODES,
        **({"afno_modes_z": DEFAULT_MODES_Z} if dims == 3 else {}),
        "t_in": _shape(state, "time_agg_layer.w", path)[0],
        "t_out": out // c_out,
        "channels": c_out,
        "decoder_width": _shape(state, "out_layer.0.weight", path)[1],
        "normalize": "scale_feats_mu.weight" in state,
        "n_cls": _shape(state, "cls_head.4.weight", path)[0],
    }
    if kind in ("dpot", "dpot3d"):
        cfg["variant"] = "dpot"  # DPOT-3D is variant dpot on a 3-D grid
        hidden = _shape(state, "blocks.0.mlp.0.weight", path)[0]
    else:
        hidden = _shape(state, "blocks.0.MoE.feature_extractor.conv.0.weight", path)[0]
        cfg["moe"] = {
            "experts": _count(state, r"^blocks\.0\.MoE\.experts\.(\d+)\."),
            "top_k": MOEPOT_TOP_K,
            "shared_experts": _count(state, r"^blocks\.0\.MoE\.shared_experts\.(\d+)\."),
            "temperature_schedule": "exponential",
            "temperature_start": 2.0,
            "temperature_end": 0.5,
            "temperature_decay": 0.99,
            "temperature_unit": "forward",
        }
    cfg["mlp_ratio"] = hidden / width
    return cfg


def check_size(kind: Kind, size: str, cfg: dict[str, Any], path: str) -> None:
    """``--size``: the checkpoint must have the published size's shape."""
    sizes = PUBLISHED.get(kind, {})
    if size not in sizes:
        raise CheckpointError(f"--size {size!r}: published {kind} sizes are {', '.join(sizes) or 'none'}")
    wrong = {k: (cfg[k], v) for k, v in sizes[size].items() if k != "params" and cfg[k] != v}
    if wrong:
        detail = ", ".join(f"{k} {got} (published {want})" for k, (got, want) in wrong.items())
        raise CheckpointError(f"{path} is not {kind} {size}: {detail}")


def map_state(state: dict[str, torch.Tensor], model: torch.nn.Module, path: str) -> dict[str, torch.Tensor]:
    """Published names and shapes onto ``model``'s; every tensor on both sides must be accounted for."""
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unknown, mismatched = [], []
    broken = [n for n, v in state.items() if v.is_floating_point() and not v.is_meta and not torch.isfinite(v).all()]
    if broken:
        raise CheckpointError(f"{path}: non-finite values (NaN/inf) in {broken[:5]}: a diverged or corrupt checkpoint")
    for name, value in state.items():
        target = our_name(name)
        if target not in own:
            unknown.append(name)
            continue
        want = own[target].shape
        if value.shape != want:
            if value.numel() != math.prod(want):  # 1x1 convs become linears: same numbers, fewer axes
                mismatched.append(f"{name} {tuple(value.shape)} vs {target} {tuple(want)}")
                continue
            value = value.reshape(want)
        mapped[target] = value.to(own[target].dtype)
    missing = sorted(set(own) - set(mapped))
    if unknown or mismatched or missing:
        raise CheckpointError(
            f"{path} does not map onto the model read from its shapes: unknown {unknown[:5]}, "
            f"shape mismatch {mismatched[:5]}, missing {missing[:5]}"
        )
    return mapped


@dataclass
class Imported:
    """A converted published checkpoint: where it went, its model config and parameter count."""

    out_dir: Path
    model: dict[str, Any]
    params: int


def finetune_config(model_cfg: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """A run config that fine-tunes the imported model on every registry set it can read."""
    from nestor_ds.config.datasets import REGISTRY

    window = model_cfg["t_in"] + model_cfg["t_out"]
    sets = [
        {"name": n}
        for n, info in REGISTRY.items()
        if info.channels <= model_cfg["channels"] and info.frames >= window and len(info.grid) == len(model_cfg["grid"])
    ]
    if not sets:
        raise CheckpointError(
            f"no registered data set fits {model_cfg['channels']} channels and {window}-frame windows"
        )
    return {
        "model": model_cfg,
        "data": {"datasets": sets, "noise_scale": 0.0},
        "train": {"epochs": 500, "output_dir": str(out_dir / "finetune"), "init_from": str(out_dir)},
        "parallel": {"ep_size": 1},
        "tracking": {"experiment": f"finetune-{model_cfg['variant']}"},
    }


def import_checkpoint(
    kind: Kind, checkpoint: str | Path, out_dir: str | Path, size: str | None = None, modes: int | None = None
) -> Imported:
    """Convert one published checkpoint; writes ``model.safetensors``, ``config.yaml``, ``import.json``."""
    import yaml

    from nestor_ds.config.schema import ModelConfig
    from nestor_ds.model.export import save_consolidated
    from nestor_ds.model.registry import build_model

    path, out_dir = str(checkpoint), Path(out_dir)
    state = read_published(checkpoint)
    found: Kind = "moepot" if any(".MoE." in k for k in state) else "dpot"
    if found == "dpot" and "pos_embed" in state and state["pos_embed"].dim() == 5:
        found = "dpot3d"
    if found != kind:
        raise CheckpointError(f"{path} holds a {found} model, not {kind}: run 'nestor-ds import {found} ...'")
    model_cfg = infer_model_config(kind, state, modes, path)
    latent = max(model_cfg["grid"]) // model_cfg["patch_size"]  # published models: one patch edge
    if modes is None and latent > DEFAULT_MODES:
        log.warning(
            "%s: latent grid %d > %d modes assumed; pass --modes with the value it was trained with",
            path,
            latent,
            DEFAULT_MODES,
        )
    if size is not None:
        check_size(kind, size, model_cfg, path)
    cfg = ModelConfig(**model_cfg)
    with torch.device("meta"):
        skeleton = build_model(cfg, ep_size=1, ep_rank=0)
    mapped = map_state(state, skeleton, path)
    params = sum(
        v.numel() for k, v in mapped.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    run_cfg = finetune_config(cfg.model_dump(mode="json"), out_dir)
    save_consolidated(mapped, out_dir / "model.safetensors", {"source": path, "kind": kind})
    tmp = out_dir / "config.yaml.partial"
    tmp.write_text(
        f"# imported from {path} ({kind}); model read from the checkpoint's tensor shapes\n"
        + yaml.safe_dump(run_cfg, sort_keys=False)
    )
    tmp.replace(out_dir / "config.yaml")
    (out_dir / "import.json").write_text(
        json.dumps(
            {
                "source": str(Path(path).resolve()),
                "kind": kind,
                "size": size,
                "params": params,
                "modes_from": "--modes" if modes else f"default {DEFAULT_MODES} (not stored in checkpoints)",
            },
            indent=1,
        )
    )
    return Imported(out_dir, model_cfg, params)
