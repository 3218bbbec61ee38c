"""A run killed while DeepSpeed builds or loads its shm op leaves torch's build lock; the next run must not wait
on it forever."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nestor_ds.engine.distributed import clear_stale_build_lock


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = tmp_path / "deepspeed_shm_comm"
    folder.mkdir()
    lock = folder / "lock"
    lock.touch()
    assert clear_stale_build_lock() is None and lock.exists()  # a build may be running now
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with caplog.at_level("WARNING"):
        assert clear_stale_build_lock() == lock
    assert not lock.exists() and "left by a killed process" in caplog.text
    assert clear_stale_build_lock() is None  # nothing there: nothing to do
