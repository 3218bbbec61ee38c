"""The pre-training data sets of DESIGN.md section 3, keyed by name.

The registry is plain facts (format, sizes, mixing weight); a run config may add
entries of its own under ``data.custom``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SourceFormat = Literal[
    "fno_mat", "pdebench_cfd", "pdebench_grouped", "pdearena_ns", "cfdbench", "shards"
]


class DatasetInfo(BaseModel):
    """What the system must know of a data set before it reads a byte of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: SourceFormat = Field(description="original file layout the reader accepts")
    resolution: int = Field(gt=0, description="native spatial resolution (square grid)")
    channels: int = Field(gt=0, description="physical channels per grid point")
    frames: int = Field(gt=1, description="time steps per trajectory")
    train: int = Field(ge=0, description="training trajectories in the full set")
    test: int = Field(ge=0, description="test trajectories in the full set")
    weight: float = Field(gt=0, description="default mixing weight in pre-training")


def _info(fmt: SourceFormat, res: int, c: int, t: int, train: int, test: int, w: float) -> DatasetInfo:
    return DatasetInfo(format=fmt, resolution=res, channels=c, frames=t, train=train, test=test, weight=w)


REGISTRY: dict[str, DatasetInfo] = {
    "ns2d_fno_1e-5": _info("fno_mat", 64, 1, 20, 1000, 200, 8),
    "ns2d_fno_1e-4": _info("fno_mat", 64, 1, 30, 9800, 200, 2),
    "ns2d_fno_1e-3": _info("fno_mat", 64, 1, 50, 1000, 200, 8),
    "ns2d_pdb_M1_eta1e-1_zeta1e-1": _info("pdebench_cfd", 128, 4, 21, 9000, 1000, 1),
    "ns2d_pdb_M1_eta1e-2_zeta1e-2": _info("pdebench_cfd", 128, 4, 21, 9000, 1000, 1),
    "ns2d_pdb_M1e-1_eta1e-1_zeta1e-1": _info("pdebench_cfd", 128, 4, 21, 9000, 1000, 1),
    "ns2d_pdb_M1e-1_eta1e-2_zeta1e-2": _info("pdebench_cfd", 128, 4, 21, 9000, 1000, 1),
    "swe_pdb": _info("pdebench_grouped", 128, 1, 101, 900, 100, 20),
    "dr_pdb": _info("pdebench_grouped", 128, 2, 101, 900, 100, 20),
    "ns2d_pda": _info("pdearena_ns", 128, 3, 14, 6500, 1300, 1),
    "ns2d_cond_pda": _info("pdearena_ns", 128, 3, 56, 3100, 200, 3),
    "cfdbench": _info("cfdbench", 64, 3, 20, 9000, 1000, 1),
}


def lookup(name: str, extra: dict[str, DatasetInfo] | None = None) -> DatasetInfo:
    """Find a data set in the config's own entries first, then the built-in registry."""
    if extra and name in extra:
        return extra[name]
    if name in REGISTRY:
        return REGISTRY[name]
    known = sorted(set(REGISTRY) | set(extra or {}))
    raise KeyError(f"unknown data set {name!r}; known: {', '.join(known)}")
