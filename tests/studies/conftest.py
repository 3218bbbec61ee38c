from __future__ import annotations

from pathlib import Path

import pytest

SETS = ["ns2d_fno_1e-3", "swe_pdb"]  # what studies/quick.yaml trains on


@pytest.fixture(scope="session")
def quick_shards(tmp_path_factory) -> Path:
    from suite_data import make_shards

    return make_shards(tmp_path_factory.mktemp("study-data"), SETS)
