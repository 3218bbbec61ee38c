from __future__ import annotations

from pathlib import Path

import pytest

SETS = ["ns2d_fno_1e-3", "swe_pdb"]  # what studies/quick.yaml trains on


@pytest.fixture(scope="session")
def quick_shards(shared_shards) -> Path:
    """The two sets of studies/quick.yaml, 8 trajectories each (shared with the Slurm tests)."""
    return shared_shards(SETS, 8)
