"""The index ``data generate`` leaves beside a generated suite (``sources.json``), read by ``data shard``.

One entry per data set: the file or folder written, its source format, and the test split it ships with
(``None``: the registry's published split)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nestor_ds.config.loading import parse_json_object
from nestor_ds.data.shards import DataError

INDEX = "sources.json"


@dataclass(frozen=True)
class SuiteEntry:
    """One generated data set: where it lies, in which format, and its test split."""

    name: str
    format: str
    path: str
    test: float | None = None


def write_suite_index(folder: str | Path, entries: list[SuiteEntry]) -> Path:
    """Write ``folder/sources.json`` listing ``entries``; returns its path."""
    index = Path(folder) / INDEX
    index.write_text(
        json.dumps({e.name: {"format": e.format, "path": e.path, "test": e.test} for e in entries}, indent=1)
    )
    return index


def read_suite_index(folder: str | Path) -> list[SuiteEntry]:
    """The entries of ``folder/sources.json``; a missing or malformed index raises :class:`DataError` naming it."""
    index = Path(folder) / INDEX
    if not index.is_file():
        raise DataError(f"{index} does not exist: run 'nestor-ds data generate' first")
    entries = []
    for name, entry in parse_json_object(index.read_text(), index, DataError).items():
        if not isinstance(entry, dict) or not {"format", "path"} <= set(entry):
            raise DataError(f"{index}: entry {name!r} needs 'format' and 'path', got {entry!r}")
        entries.append(SuiteEntry(name, entry["format"], entry["path"], entry.get("test")))
    return entries
