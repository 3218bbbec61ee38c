"""File integrity on the ground floor: sha256 of a file, and a folder's checksum manifest and its check.

The data shards (``data/shards.py``), the checkpoints (``engine/checkpoint_integrity.py``, which shares the
hashing among ranks) and model export all use these, so nothing above has to import sideways or up.

``<folder>/nestor_manifest.json`` lists every file of a folder with its size and sha256, plus the step and
the run config (readable without unpickling anything). It is written last: a folder without it was never
completed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from nestor_ds.atomic import write_text_atomic
from nestor_ds.errors import CheckpointError

MANIFEST = "nestor_manifest.json"


def sha256_of(path: Path) -> str:
    """The file's sha256 as hex, read in 1 MiB blocks (any size, constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest(path: Path) -> dict[str, Any]:
    """A manifest entry: the file's sha256 and size."""
    return {"sha256": sha256_of(path), "bytes": path.stat().st_size}


def write_folder_manifest(folder: Path, files: dict[str, dict[str, Any]], step: int, config: dict[str, Any]) -> None:
    """Write ``folder``'s manifest (atomically) from entries made by :func:`digest`."""
    write_text_atomic(
        folder / MANIFEST,
        json.dumps({"format": 1, "step": step, "config": config, "files": dict(sorted(files.items()))}, indent=1),
    )


def read_folder_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of ``folder``; a missing or malformed one raises :class:`CheckpointError` naming it."""
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint was never completed (or predates manifests)")
    try:
        manifest = json.loads(path.read_text())
        manifest["files"], manifest["step"], manifest["config"]  # noqa: B018 - the keys a manifest must have
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a checkpoint manifest ({err})") from None
    return manifest


def file_problems(folder: Path, entries: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """What is wrong with these manifest entries of ``folder``: missing files, wrong sizes, wrong sha256."""
    found = []
    for name, want in entries:
        path = folder / name
        if not path.is_file():
            found.append(f"{path} is missing")
        elif path.stat().st_size != want["bytes"]:
            found.append(f"{path} has {path.stat().st_size} bytes, the manifest says {want['bytes']}")
        elif sha256_of(path) != want["sha256"]:
            found.append(f"{path} does not match its sha256 in the manifest (damaged)")
    return found


def folder_problems(folder: Path) -> list[str]:
    """Everything wrong with ``folder`` against its manifest, checked by this process alone (empty: intact)."""
    try:
        entries = sorted(read_folder_manifest(folder)["files"].items())
    except CheckpointError as err:
        return [str(err)]
    return file_problems(folder, entries)
