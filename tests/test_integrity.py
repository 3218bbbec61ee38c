"""Folder manifests on the ground floor: what a damaged, short or missing file looks like to the check."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestor_ds.errors import CheckpointError
from nestor_ds.integrity import MANIFEST, digest, folder_problems, read_folder_manifest, write_folder_manifest


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tag"
    folder.mkdir()
    for name, size in (("a.pt", 3000), ("b.pt", 10)):
        (folder / name).write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    files = {p.name: digest(p) for p in folder.iterdir()}
    write_folder_manifest(folder, files, step=7, config={"seed": 1})
    return folder


def test_an_intact_folder_has_no_problems_and_its_manifest_reads_back(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    assert folder_problems(folder) == []
    manifest = read_folder_manifest(folder)
    assert manifest["step"] == 7 and manifest["config"] == {"seed": 1} and sorted(manifest["files"]) == ["a.pt", "b.pt"]


def test_each_fault_is_named(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    data = bytearray((folder / "a.pt").read_bytes())
    data[1234] ^= 1  # one flipped bit, same size
    (folder / "a.pt").write_bytes(bytes(data))
    (folder / "b.pt").unlink()
    assert folder_problems(folder) == [
        f"{folder / 'a.pt'} does not match its sha256 in the manifest (damaged)",
        f"{folder / 'b.pt'} is missing",
    ]
    (folder / "a.pt").write_bytes(b"short")
    assert folder_problems(folder)[0] == f"{folder / 'a.pt'} has 5 bytes, the manifest says 3000"


def test_a_folder_without_or_with_a_broken_manifest_is_refused_by_name(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{MANIFEST} is not a checkpoint manifest"):
        read_folder_manifest(folder)
    (folder / MANIFEST).unlink()
    assert folder_problems(folder) == [
        f"{folder / MANIFEST} is missing: the checkpoint was never completed (or predates manifests)"
    ]
