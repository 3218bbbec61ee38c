"""Consolidated weights: one safetensors file that loads into a model of any ep_size.

In the file every expert carries its global id; a rank loading it keeps the
experts it holds and renames them to its local ids.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from nestor_ds.errors import CheckpointError
from nestor_ds.integrity import MANIFEST, folder_problems
from nestor_ds.model.expert_parallel import SampleMoE
from nestor_ds.safe_load import torch_load

EXPERT_KEY = re.compile(r"^(?P<prefix>.*\.deepspeed_experts\.)(?P<id>\d+)(?P<rest>\..*)$")


def _moe_prefixes(model: torch.nn.Module) -> dict[str, SampleMoE]:
    return {f"{name}.": m for name, m in model.named_modules() if isinstance(m, SampleMoE)}


def _layer_of(key: str, layers: dict[str, SampleMoE]) -> SampleMoE | None:
    return next((m for prefix, m in layers.items() if key.startswith(prefix)), None)


def global_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """This rank's state dict with local expert ids replaced by global ones."""
    layers = _moe_prefixes(model)
    out = {}
    for key, value in model.state_dict().items():
        match, layer = EXPERT_KEY.match(key), _layer_of(key, layers)
        if match and layer is not None:
            gid = layer.deepspeed_moe.expected_ep_rank * layer.num_local_experts + int(match["id"])
            key = f"{match['prefix']}{gid}{match['rest']}"
        out[key] = value.detach().cpu().contiguous()
    return out


def local_state_dict(model: torch.nn.Module, full: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """From a consolidated dict, the entries this rank's model holds, under local expert ids."""
    layers = _moe_prefixes(model)
    out = {}
    for key, value in full.items():
        match, layer = EXPERT_KEY.match(key), _layer_of(key, layers)
        if match and layer is not None:
            lo = layer.deepspeed_moe.expected_ep_rank * layer.num_local_experts
            gid = int(match["id"])
            if not lo <= gid < lo + layer.num_local_experts:
                continue
            key = f"{match['prefix']}{gid - lo}{match['rest']}"
        out[key] = value
    return out


def gather_consolidated(model: torch.nn.Module, group: dist.ProcessGroup | None = None) -> dict[str, torch.Tensor]:
    """All experts of every rank in one dict (collective: every rank must call it)."""
    mine = global_state_dict(model)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return mine
    parts: list[dict[str, torch.Tensor] | None] = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, mine, group=group)
    full: dict[str, torch.Tensor] = {}
    for part in parts:
        full.update(part or {})
    return full


def save_consolidated(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write atomically: a crash never leaves a file that looks complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def load_consolidated(model: torch.nn.Module, path: str | Path) -> None:
    """Load a consolidated safetensors file into a model of any ep_size (its local expert shard)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"consolidated weights {path} do not exist")
    state = local_state_dict(model, load_file(str(path)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit this model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def read_checkpoint_state(
    checkpoint_dir: str | Path, tag: str | None = None, verify: bool = True
) -> dict[str, torch.Tensor]:
    """All weights of a DeepSpeed MoE checkpoint (dense file + one file per expert), global expert ids.

    Runs offline in one process, whatever ep_size the checkpoint was written with; weights only (nothing is
    unpickled beyond tensors and plain containers), after the checksum manifest is checked (``verify=False``:
    the caller has just checked it).
    """
    root = Path(checkpoint_dir)
    if tag is None:
        latest = root / "latest"
        if not latest.is_file():
            raise CheckpointError(f"{root} has no 'latest' file; pass the checkpoint tag")
        tag = latest.read_text().strip()
    folder = root / tag
    dense_files = sorted(folder.glob("mp_rank_*_model_states.pt"))
    if not dense_files:
        raise CheckpointError(f"{folder} holds no mp_rank_*_model_states.pt: not a DeepSpeed checkpoint")
    if verify:
        verify_if_manifest(folder)
    state = dict(torch_load(dense_files[0])["module"])
    for f in sorted(folder.glob("layer_*_expert_*_mp_rank_*_model_states.pt")):
        state.update(torch_load(f))
    return state


def verify_if_manifest(folder: Path) -> None:
    """A tag written by nestor-ds carries a checksum manifest: check it before use (published or hand-made
    folders have none and are read as they are)."""
    if (folder / MANIFEST).is_file() and (found := folder_problems(folder)):
        raise CheckpointError(f"checkpoint {folder} is damaged: {'; '.join(found)}")


def export_checkpoint(checkpoint_dir: str | Path, out: str | Path, tag: str | None = None) -> Path:
    """Merge a DeepSpeed MoE checkpoint into one safetensors file that loads into any ep_size."""
    return save_consolidated(read_checkpoint_state(checkpoint_dir, tag), out, {"source": str(checkpoint_dir)})


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Consolidated weights from a .safetensors file, a folder holding ``model.safetensors`` (what
    ``nestor-ds import`` writes) or a DeepSpeed checkpoint directory."""
    path = Path(path)
    if path.is_dir() and (path / "model.safetensors").is_file():
        return load_file(str(path / "model.safetensors"))
    if path.is_dir():
        return read_checkpoint_state(path)
    if not path.is_file():
        raise CheckpointError(f"weights {path} do not exist")
    return load_file(str(path))
