"""A trained model as one folder (``model.safetensors`` + ``config.yaml``), and loading it in one call.

``export_model`` turns a DeepSpeed checkpoint of any ``ep_size`` into that folder; ``nestor-ds import``
writes the same folder for published DPOT/MoE-POT checkpoints; ``load_model`` reads either folder, or
a checkpoint directory directly, into a single-device model: no YAML to find by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from nestor_ds.atomic import write_text_atomic
from nestor_ds.config import ConfigError, RunConfig, parse_config
from nestor_ds.model.operator import NeuralOperator

WEIGHTS, CONFIG, CHANNELS, STATS = "model.safetensors", "config.yaml", "channels.json", "set_stats.json"


def _checkpoint_folder(root: Path, tag: str | None) -> Path:
    if tag is None:
        latest = root / "latest"
        if not latest.is_file():
            raise ConfigError(
                f"{root} is not a model folder ({WEIGHTS} + {CONFIG}) nor a checkpoint directory with a 'latest' file"
            )
        tag = latest.read_text().strip()
    folder = root / tag
    if not folder.is_dir():
        raise ConfigError(f"{root}: checkpoint {tag!r} does not exist")
    return folder


def checkpoint_client_state(root: str | Path, tag: str | None = None) -> dict[str, Any]:
    """What the trainer stored beside the weights: step, the resolved run config, the MLflow run id."""
    folder = _checkpoint_folder(Path(root), tag)
    files = sorted(folder.glob("mp_rank_*_model_states.pt"))
    if not files:
        raise ConfigError(f"{folder} holds no mp_rank_*_model_states.pt: not a DeepSpeed checkpoint")
    from nestor_ds.model.export import verify_if_manifest
    from nestor_ds.safe_load import torch_load

    verify_if_manifest(folder)
    state = torch_load(files[0])
    if "config" not in state:
        raise ConfigError(f"{files[0]} carries no run config (not written by nestor-ds)")
    return {k: state[k] for k in ("step", "config", "mlflow_run_id") if k in state}


def checkpoint_config(root: str | Path, tag: str | None = None) -> RunConfig:
    """The run config saved in a checkpoint."""
    return parse_config(checkpoint_client_state(root, tag)["config"])


def export_model(checkpoint: str | Path, out: str | Path, tag: str | None = None) -> Path:
    """Consolidated weights (global expert ids: they load at any ep_size) and the run's resolved config.

    The config is written first and the weights last, each atomically: a folder whose ``model.safetensors``
    exists is complete."""
    from nestor_ds.model.export import read_checkpoint_state, save_consolidated

    checkpoint, out = Path(checkpoint), Path(out)
    client = checkpoint_client_state(checkpoint, tag)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / CONFIG, yaml.safe_dump(client["config"], sort_keys=False))
    info = {
        "source": str(checkpoint.resolve()),
        "step": client.get("step"),
        "mlflow_run_id": client.get("mlflow_run_id"),
    }
    write_text_atomic(out / "export.json", json.dumps(info, indent=1))
    manifests = train_manifests(parse_config(client["config"]))
    if manifests:
        names = {name: list(m["channels"]) for name, m in manifests.items()}
        write_text_atomic(out / CHANNELS, json.dumps(names, indent=1))
        stats = {name: {"mean": m["mean"], "std": m["std"]} for name, m in manifests.items()}
        write_text_atomic(out / STATS, json.dumps(stats, indent=1))
    # checkpoint_client_state has checked the manifest: the files are not hashed a second time
    save_consolidated(
        read_checkpoint_state(checkpoint, tag, verify=False), out / WEIGHTS, {k: str(v) for k, v in info.items()}
    )
    return out


def train_manifests(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """Each training data set's train-split manifest where the shards can be reached (channel names users can
    name their channels by; the statistics of ``model.normalize: stats``); sets whose shards are gone are left
    out."""
    from nestor_ds.data.loader import split_manifest
    from nestor_ds.data.shards import DataError

    found = {}
    for entry in cfg.data.datasets:
        try:
            found[entry.name] = split_manifest(cfg, entry, cfg.data.train_split, check_sizes=False)[1]
        except (DataError, OSError):
            continue
    return found


def channel_names(cfg: RunConfig) -> dict[str, list[str]]:
    """Each training data set's channel names, from its train manifest where the shards can be reached."""
    return {name: list(m["channels"]) for name, m in train_manifests(cfg).items()}


def set_stats(cfg: RunConfig) -> dict[str, dict[str, list[float]]]:
    """Each training data set's train-split channel mean and std, where the shards can be reached."""
    return {name: {"mean": m["mean"], "std": m["std"]} for name, m in train_manifests(cfg).items()}


def model_config(path: str | Path) -> RunConfig:
    """The run config of a model folder or a checkpoint directory."""
    from nestor_ds.config import load_config

    path = Path(path)
    if (path / WEIGHTS).is_file():
        if not (path / CONFIG).is_file():
            raise ConfigError(f"{path} has {WEIGHTS} but no {CONFIG}: export it again with 'nestor-ds export'")
        return load_config(path / CONFIG)
    if not path.exists():
        raise ConfigError(f"model {path} does not exist")
    return checkpoint_config(path)


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> NeuralOperator:
    """A trained model on one device, in evaluation mode, from a model folder (``nestor-ds export`` or
    ``nestor-ds import``) or a DeepSpeed checkpoint directory of any ep_size. MoE routers use the final
    temperature, as fine-tuning and evaluation do."""
    from nestor_ds.model import build_model
    from nestor_ds.model.export import local_state_dict, read_weights

    cfg = model_config(path)
    model = build_model(cfg.model, ep_size=1, seed=cfg.train.seed, ep_rank=0)
    state = local_state_dict(model, read_weights(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"{path}: weights do not fit its config: missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}"
        )
    if cfg.model.is_moe:
        model.set_temperature(cfg.model.moe.final_temperature)
    model.run_config = cfg  # what the model was trained with: resolution, channels, pad value
    names, stats = Path(path) / CHANNELS, Path(path) / STATS
    model.channel_names = json.loads(names.read_text()) if names.is_file() else channel_names(cfg)
    model.set_stats = json.loads(stats.read_text()) if stats.is_file() else set_stats(cfg)
    return model.to(device=device, dtype=dtype).eval()


def evaluation_folder(weights: str | Path, out: str | Path | None) -> Path:
    """Where ``nestor-ds evaluate`` writes: ``out``, else ``evaluation/`` beside the model folder or checkpoints."""
    weights = Path(weights)
    run_dir = weights if (weights / WEIGHTS).is_file() else weights.parent
    return Path(out) if out else run_dir / "evaluation"


def write_model_config(weights: str | Path, out: Path) -> Path:
    """The run config that came with ``weights`` (a model folder or checkpoint), as ``out/config.yaml``."""
    cfg = model_config(weights)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return out / "config.yaml"
