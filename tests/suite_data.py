"""Small sharded data sets made with the CLI as a user would (``data generate`` then ``data shard``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]


def make_shards(root: Path, sets: list[str], trajectories: int = 8) -> Path:
    """``root/shards`` holding ``sets`` at 32x32, 12 frames, 2 trajectories per shard."""
    cli = [sys.executable, "-m", "nestor_ds", "data"]
    for cmd in (
        [
            "generate",
            "--suite",
            "small",
            "--out",
            str(root / "raw"),
            "--trajectories",
            str(trajectories),
            "--resolution",
            "32",
            "--frames",
            "12",
            "--only",
            ",".join(sets),
        ],
        ["shard", "--from-suite", str(root / "raw"), "--out", str(root / "shards"), "--per-shard", "2"],
    ):
        out = subprocess.run(cli + cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return root / "shards"


def train_batches(cfg: Any, rank: int = 0, world: int = 1, start_batch: int = 0) -> Iterator[dict]:
    """The train batches of ``rank`` from micro-batch ``start_batch`` on, as a run gets them: the sources opened
    once, the stream started by ``TrainLoader.restart``."""
    from nestor_ds.data.loader import TrainLoader, open_sources

    return TrainLoader(cfg, open_sources(cfg, cfg.data.train_split), rank, world).restart(start_batch)
