"""A checksum manifest beside every checkpoint, and the check that a checkpoint is whole before it is used.

``<tag>/nestor_manifest.json`` lists every file of the tag with its size and
sha256, plus the step and the run config (readable without unpickling anything).
It is written last, after every rank has finished its files: a tag without it
was never completed. The ranks share the hashing (rank r hashes every
world-th file) and agree on the verdict, so all of them resume from the same tag.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.distributed as dist

from nestor_ds.atomic import write_text_atomic
from nestor_ds.data.shards import sha256_of

MANIFEST = "nestor_manifest.json"


def _rank_world(shared: bool = True) -> tuple[int, int]:
    if shared and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(items: list[Any], shared: bool = True) -> list[Any]:
    """Every rank's items, concatenated (collective when distributed and ``shared``)."""
    rank, world = _rank_world(shared)
    if world == 1:
        return items
    parts: list[list[Any] | None] = [None] * world
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in (part or [])]


def digest(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_of(path), "bytes": path.stat().st_size}


def write_manifest(folder: Path, step: int, config: dict[str, Any]) -> None:
    """Collective: every rank hashes its share of the tag's files; rank 0 writes the manifest."""
    rank, world = _rank_world()
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    files = dict(gather([(name, digest(folder / name)) for name in names[rank::world]]))
    if rank == 0:
        write_text_atomic(folder / MANIFEST, json.dumps(
            {"format": 1, "step": step, "config": config, "files": dict(sorted(files.items()))}, indent=1))


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the checkpoint was never completed (or predates manifests)")
    try:
        manifest = json.loads(path.read_text())
        manifest["files"], manifest["step"], manifest["config"]  # noqa: B018 - the keys a manifest must have
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a checkpoint manifest ({err})") from None
    return manifest


def problems(folder: Path, shared: bool = True) -> list[str]:
    """What is wrong with the tag ``folder`` (empty: intact). ``shared`` and distributed: collective, the
    ranks share the hashing and all return the same list; otherwise this process checks every file."""
    rank, world = _rank_world(shared)
    try:
        files = sorted(read_manifest(folder)["files"].items())
    except (FileNotFoundError, ValueError) as err:
        return gather([str(err)] if rank == 0 else [], shared)
    found = []
    for name, want in files[rank::world]:
        path = folder / name
        if not path.is_file():
            found.append(f"{path} is missing")
        elif path.stat().st_size != want["bytes"]:
            found.append(f"{path} has {path.stat().st_size} bytes, the manifest says {want['bytes']}")
        elif digest(path)["sha256"] != want["sha256"]:
            found.append(f"{path} does not match its sha256 in the manifest (damaged)")
    return sorted(gather(found, shared))
