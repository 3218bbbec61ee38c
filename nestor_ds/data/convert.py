"""Original release files -> WebDataset shards under the published split, in parallel if asked.

Every split is cut into shard jobs of a fixed number of items (trajectories, or
CFDBench cases) chosen so that a shard holds about ``shard_bytes`` of arrays; job k
writes ``shard-k.tar`` whole or not at all. The shards are therefore the same
whatever the number of worker processes, and the manifest (written last) lists
them in order.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Sequence

from nestor_ds.config.datasets import DatasetInfo, lookup
from nestor_ds.data.shards import (
    DataError,
    ShardResult,
    StagedFolder,
    write_manifest,
    write_shard,
)
from nestor_ds.data.splits import Item, ValidChoice, plan_splits, read_items

log = logging.getLogger(__name__)
DEFAULT_SHARD_BYTES = 256 * 2**20


@dataclass(frozen=True)
class ShardJob:
    """One data set's conversion: its source, format and split options."""

    dataset: str
    fmt: str
    split: str
    number: int
    first: int  # position of items[0] in the split
    items: tuple[Item, ...]
    folder: str
    options: tuple[tuple[str, Any], ...]


def _run_job(job: ShardJob, on_trajectory: Any = None) -> tuple[str, int, ShardResult]:
    stream = read_items(job.fmt, job.dataset, job.items, job.first, **dict(job.options))
    return (
        job.split,
        job.number,
        write_shard(Path(job.folder), job.number, job.dataset, job.split, stream, on_trajectory),
    )


def reader_options(fmt: str, info: DatasetInfo, channel_order: str, problems: Sequence[str]) -> dict[str, Any]:
    """What the reader of ``fmt`` needs beyond the path: DPOT's channel order, CFDBench's segments."""
    if fmt in ("pdebench_cfd", "pdebench_cfd3d"):
        return {"channel_order": channel_order}
    if fmt == "cfdbench":
        return {"problems": tuple(problems), "segment_frames": info.frames, "resize": info.grid[0]}
    return {}


def _items_per_shard(
    fmt: str, dataset: str, plan: dict[str, list[Item]], options: dict[str, Any], shard_bytes: int
) -> int:
    """Items per shard so a shard holds about ``shard_bytes``: measured on the first item."""
    first = next(items for items in plan.values() if items)
    size = sum(t.data.nbytes for t in read_items(fmt, dataset, first[:1], **options))
    return max(1, shard_bytes // max(size, 1))


def shard_dataset(
    dataset: str,
    source: str | Path,
    out: str | Path,
    *,
    fmt: str | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    per_shard: int | None = None,
    workers: int = 1,
    test: float | None = None,
    valid: ValidChoice = "dpot",
    channel_order: str = "dpot",
    problems: Sequence[str] = ("cavity", "cylinder", "tube"),
    extra: dict[str, DatasetInfo] | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Write ``out/<dataset>/<split>/`` for every split of the published split; return the manifests by split.

    ``per_shard`` fixes the items per shard instead of ``shard_bytes``; ``test`` overrides
    the published split (a count of trailing trajectories, or a share); ``valid`` says
    where PDEArena's valid files and CFDBench's dev cases go (``dpot``: train for
    PDEArena, dropped for CFDBench, as DPOT did).
    """
    if workers < 1:
        raise DataError(f"workers must be at least 1, got {workers}")
    info = lookup(dataset, extra)
    fmt = fmt or info.format
    options = reader_options(fmt, info, channel_order, problems)
    plan = plan_splits(info, fmt, source, test=test, valid=valid, problems=problems)
    per = per_shard or _items_per_shard(fmt, dataset, plan, options, shard_bytes)
    staged = StagedFolder(Path(out) / dataset)  # a data set already there stays in use until the new one is whole
    with staged.writing(f"the shards of {dataset}"):
        manifests = _write_splits(dataset, fmt, source, info, plan, options, per, staged.path, workers, test, progress)
        staged.commit()
    return manifests


def _write_splits(
    dataset: str,
    fmt: str,
    source: str | Path,
    info: DatasetInfo,
    plan: dict[str, list[Item]],
    options: dict[str, Any],
    per: int,
    root: Path,
    workers: int,
    test: float | None,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    jobs = []
    for split, items in plan.items():
        folder = root / split
        folder.mkdir(parents=True)
        jobs += [
            ShardJob(
                dataset,
                fmt,
                split,
                k,
                k * per,
                tuple(items[k * per : (k + 1) * per]),
                str(folder),
                tuple(sorted(options.items())),
            )
            for k in range(-(-len(items) // per))
        ]
    results: dict[str, list[ShardResult | None]] = {s: [None] * -(-len(i) // per) for s, i in plan.items()}
    total = sum(len(i) for i in plan.values())
    unit = "case" if fmt == "cfdbench" else "traj"
    bar = _bar(total, dataset, unit, progress)
    start = time.perf_counter()
    if workers == 1:
        per_traj = bar is not None and fmt != "cfdbench"  # a CFDBench case gives several segments: count cases
        for job in jobs:
            split, k, result = _run_job(job, (lambda: bar.update(1)) if per_traj else None)
            results[split][k] = result
            if not per_traj:
                _advance(bar, len(job.items))
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_run_job, job): job for job in jobs}
            for fut in as_completed(futures):
                split, k, result = fut.result()
                results[split][k] = result
                _advance(bar, len(futures[fut].items))
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    source_meta = {
        "format": fmt,
        "source": str(source),
        "split_rule": info.split if test is None else f"test={test}",
        **{k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
    }
    manifests = {
        split: write_manifest(
            root / split, dataset, split, [r for r in parts if r is not None], {"conversion": source_meta}
        )
        for split, parts in results.items()
    }
    log.info(
        "%s: %d %ss in %.1f s (%.1f %ss/s, %d workers)",
        dataset,
        total,
        unit,
        seconds,
        total / max(seconds, 1e-9),
        unit,
        workers,
    )
    return manifests


def _bar(total: int, dataset: str, unit: str, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"shard {dataset}", unit=unit, dynamic_ncols=True)


def _advance(bar: Any, n: int) -> None:
    if bar is not None:
        bar.update(n)


def parse_size(text: str) -> int:
    """'256MB', '1GiB', '64k' or plain bytes -> bytes (decimal and binary units both accepted)."""
    units = {
        "": 1,
        "b": 1,
        "k": 10**3,
        "kb": 10**3,
        "kib": 2**10,
        "m": 10**6,
        "mb": 10**6,
        "mib": 2**20,
        "g": 10**9,
        "gb": 10**9,
        "gib": 2**30,
    }
    raw = str(text).strip().lower()
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number) :].strip()
    try:
        value = float(number) * units[unit]
    except (KeyError, ValueError):
        raise DataError(f"shard size {text!r}: expected a number with an optional unit (kB, MB, MiB, GB)") from None
    if value < 1:
        raise DataError(f"shard size {text!r} must be positive")
    return int(value)
