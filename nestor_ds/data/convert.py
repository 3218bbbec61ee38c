"""Original-format files -> WebDataset shards with a train/test split, in one streaming pass."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from nestor_ds.data.formats import open_source
from nestor_ds.data.registry import DatasetInfo, lookup
from nestor_ds.data.shards import SplitWriter


def shard_dataset(dataset: str, source: str | Path, out: str | Path, *, fmt: str | None = None,
                  per_shard: int = 16, test_every: int | None = None,
                  extra: dict[str, DatasetInfo] | None = None, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Write ``out/<dataset>/{train,test}/``; return the manifests by split.

    PDEArena files carry their own splits; for the others every ``test_every``-th
    trajectory goes to test (default from the registry's train/test ratio).
    """
    info = lookup(dataset, extra)
    fmt = fmt or info.format
    root = Path(out) / dataset
    if fmt == "pdearena_ns":
        plan = [(split, open_source(source, fmt, dataset, split=split)) for split in ("train", "test")]
        return {split: _write(stream, root, dataset, split, per_shard, progress) for split, stream in plan}
    every = test_every or max(2, round((info.train + info.test) / max(info.test, 1)))
    writers = {split: SplitWriter(root, dataset, split, per_shard) for split in ("train", "test")}
    stream = open_source(source, fmt, dataset)
    if progress:
        from tqdm import tqdm

        stream = tqdm(stream, desc=f"shard {dataset}", unit="traj")
    for n, traj in enumerate(stream):
        writers["test" if n % every == every - 1 else "train"].add(traj)
    return {split: w.close() for split, w in writers.items()}


def _write(stream: Any, root: Path, dataset: str, split: str, per_shard: int, progress: bool) -> dict[str, Any]:
    writer = SplitWriter(root, dataset, split, per_shard)
    if progress:
        from tqdm import tqdm

        stream = tqdm(stream, desc=f"shard {dataset}/{split}", unit="traj")
    for traj in stream:
        writer.add(traj)
    return writer.close()
