"""The index ``data generate`` leaves for ``data shard --from-suite``: written, read back, and refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestor_ds.data.shards import DataError
from nestor_ds.data.suite_index import INDEX, SuiteEntry, read_suite_index, write_suite_index


def test_entries_round_trip(tmp_path: Path) -> None:
    entries = [SuiteEntry("ns2d_fno_1e-5", "fno_mat", "/x/ns.mat", 0.2), SuiteEntry("ns2d_pda", "pdearena_ns", "/y")]
    assert write_suite_index(tmp_path, entries) == tmp_path / INDEX
    assert read_suite_index(tmp_path) == entries


def test_a_missing_or_malformed_index_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path / INDEX} does not exist: run 'nestor-ds data generate' first"):
        read_suite_index(tmp_path)
    (tmp_path / INDEX).write_text('{"ns2d_pda": {"path": "/y"}}')
    with pytest.raises(DataError, match=r"entry 'ns2d_pda' needs 'format' and 'path'"):
        read_suite_index(tmp_path)
    (tmp_path / INDEX).write_text("[1, 2]")
    with pytest.raises(DataError, match="must hold a JSON object"):
        read_suite_index(tmp_path)
