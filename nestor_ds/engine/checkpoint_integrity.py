"""The checkpoint manifest written and checked by all ranks together (the hashing shared, the verdict agreed).

The manifest itself (format, hashing, per-file checks) is :mod:`nestor_ds.integrity`; this module splits the
work among ranks: rank r hashes every world-th file, and all ranks agree on the result, so all of them resume
from the same tag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nestor_ds.engine.distributed import gather, rank_world
from nestor_ds.errors import CheckpointError
from nestor_ds.integrity import (
    MANIFEST,
    digest,
    file_problems,
    read_folder_manifest,
    write_folder_manifest,
)


def write_manifest(folder: Path, step: int, config: dict[str, Any]) -> None:
    """Collective: every rank hashes its share of the tag's files; rank 0 writes the manifest."""
    rank, world = rank_world()
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    files = dict(gather([(name, digest(folder / name)) for name in names[rank::world]]))
    if rank == 0:
        write_folder_manifest(folder, files, step, config)


def problems(folder: Path, shared: bool = True) -> list[str]:
    """What is wrong with the tag ``folder`` (empty: intact). ``shared`` and distributed: collective, the
    ranks share the hashing and all return the same list; otherwise this process checks every file."""
    rank, world = rank_world(shared)
    try:
        files = sorted(read_folder_manifest(folder)["files"].items())
    except CheckpointError as err:
        return gather([str(err)] if rank == 0 else [], shared)
    return sorted(gather(file_problems(folder, files[rank::world]), shared))
