"""Shared fixtures and marker handling: GPU tests skip cleanly on CPU machines."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parent.parent

try:  # CPU machines: say so, rather than let DeepSpeed guess
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
except ImportError:
    pass


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_shards(tmp_path_factory: pytest.TempPathFactory) -> Callable[[list[str], int], Path]:
    """``get(sets, trajectories)``: a private copy of small shards made with the CLI (``suite_data.make_shards``).
    Each distinct (sets, trajectories) is generated and sharded once per test run; every call gets its own copy,
    so no test sees another's writes."""
    from suite_data import make_shards

    made: dict[tuple[tuple[str, ...], int], Path] = {}

    def get(sets: list[str], trajectories: int = 8) -> Path:
        key = (tuple(sets), trajectories)
        if key not in made:
            made[key] = make_shards(tmp_path_factory.mktemp("shared-data"), sets, trajectories)
        copy = tmp_path_factory.mktemp("shards-copy") / "shards"
        shutil.copytree(made[key], copy)
        return copy

    return get
