"""DeepSpeed checkpoints that become ``latest`` only once completely written, keeping the newest K.

Client state carries what DeepSpeed does not: the step, the loader position, RNG
states and the run config, so a resumed run repeats an uninterrupted one exactly.
"""
from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from nestor_ds.atomic import write_text_atomic


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


TAG = re.compile(r"step(\d{8})")


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def prunable(root: Path, current: str, keep: int) -> list[str]:
    """Tags to delete after writing ``current``: only this run's own (``stepNNNNNNNN`` folders of earlier
    steps; a folder of a later step belongs to another run in a reused directory, any other name to the user),
    never ``current`` nor what ``latest`` names, keeping the newest ``keep`` including ``current``."""
    step = int(TAG.fullmatch(current).group(1))
    protected = {current, latest_tag(root)}
    own = sorted((int(m.group(1)), p.name) for p in root.iterdir()
                 if p.is_dir() and (m := TAG.fullmatch(p.name)) and int(m.group(1)) < step)
    own = [name for _, name in own]
    kept_older = max(keep - 1, 0)
    old = own[:-kept_older] if kept_older else own
    return [tag for tag in old if tag not in protected]


def latest_tag(root: Path) -> str | None:
    latest = root / "latest"
    return latest.read_text().strip() if latest.is_file() else None


def save(engine: Any, root: Path, step: int, client_state: dict[str, Any], keep: int) -> str:
    """Collective: every rank writes its part; rank 0 then points ``latest`` at it and prunes old ones."""
    tag = tag_for(step)
    engine.save_checkpoint(str(root), tag=tag, client_state={**client_state, "rng": rng_state()}, save_latest=False)
    dist.barrier()
    if dist.get_rank() == 0:
        write_text_atomic(root / "latest", tag)  # only now is the checkpoint visible as complete
        for old in prunable(root, tag, keep):
            shutil.rmtree(root / old, ignore_errors=True)
    dist.barrier()
    return tag


def load(engine: Any, root: Path) -> dict[str, Any] | None:
    """Resume from ``latest`` if there is one; returns the client state (None: fresh start)."""
    tag = latest_tag(root)
    if tag is None:
        return None
    path, client = engine.load_checkpoint(str(root), tag=tag)
    if path is None:
        raise RuntimeError(f"{root}/{tag}: DeepSpeed could not load this checkpoint")
    set_rng_state(client["rng"])
    return client
