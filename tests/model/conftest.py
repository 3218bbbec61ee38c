from __future__ import annotations

from pathlib import Path

import pytest

from nestor_ds.config import ModelConfig, load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_model_cfg() -> ModelConfig:
    return load_config(REPO / "configs" / "tiny_cpu.yaml").model


def variant(cfg: ModelConfig, **update) -> ModelConfig:
    """A validated copy with nested updates given as dotted keys (``moe.top_k=1``)."""
    raw = cfg.model_dump()
    for dotted, value in update.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        if leaf == "resolution":  # shorthand for a square 2-D grid
            leaf, value = "grid", [value, value]
        node[leaf] = value
    return ModelConfig.model_validate(raw)
