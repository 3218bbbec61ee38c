"""Reading a run config from YAML, with errors that name the file and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nestor_ds.config.schema import RunConfig
from nestor_ds.errors import UserError


class ConfigError(UserError):
    """A run or DeepSpeed configuration that cannot work, with the reason."""


def parse_json_object(text: str | bytes, source: object, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """``text`` as a JSON object; a bad one raises ``error`` naming ``source`` and what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{source} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise error(f"{source} must hold a JSON object, got {type(data).__name__}")
    return data


def describe_validation(err: ValidationError) -> str:
    """One line per fault: the dotted field and pydantic's message."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def parse_config(raw: dict[str, Any], source: str = "<dict>") -> RunConfig:
    """A run config from a dict; a bad one raises ConfigError naming ``source`` and each field at fault."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        faults = describe_validation(err)
        sep = " " if faults.count("\n") == 0 else "\n"  # one fault: one line
        raise ConfigError(f"invalid run config {source}:{sep}{faults.strip() if sep == ' ' else faults}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Load a YAML run config; ``overrides`` maps dotted paths to values (``train.steps: 5``)."""
    from nestor_ds.config.shipped import resolve_shipped

    path = resolve_shipped(path)
    if not path.is_file():
        raise ConfigError(f"run config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"run config {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"run config {path} must be a mapping at the top level, got {type(raw).__name__}")
    overrides = overrides or {}
    for length, other in (("train.steps", "epochs"), ("train.epochs", "steps")):
        # a run's length given on the command line replaces the file's, whichever unit the file used
        if length in overrides and f"train.{other}" not in overrides and isinstance(raw.get("train"), dict):
            raw["train"].pop(other, None)
    for given, other in (("model.grid", "resolution"), ("model.resolution", "grid")):
        # the model's grid given on the command line replaces the file's, in either spelling
        if given in overrides and isinstance(raw.get("model"), dict):
            raw["model"].pop(other, None)
    for dotted, value in overrides.items():
        set_dotted(raw, dotted, value)
    return parse_config(raw, str(path))


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """``raw[a][b][0][c] = value`` for ``a.b.0.c``: integer segments index lists (``data.datasets.0.weight``)."""
    node: Any = raw
    *parents, leaf = dotted.split(".")
    for i, key in enumerate([*parents, leaf]):
        last = i == len(parents)
        if isinstance(node, list):
            if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
                raise ConfigError(
                    f"--set {dotted}: {'.'.join(dotted.split('.')[:i]) or dotted} is a list of "
                    f"{len(node)}; {key!r} is not an index into it"
                )
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(dotted.split('.')[:i])} is a value, not a section")
        if last:
            node[key] = value
        else:
            node = node.setdefault(key, {})
