"""The pre-training data sets of DESIGN.md section 3, keyed by name.

Plain facts, below the run config (the data package builds on them, never the
other way round). ``train``/``test`` are what ``nestor-ds data shard`` writes for
the real release files under the published split; ``dpot_train``/``dpot_test``
are the first-N subsets DPOT's ``utils/make_master_file.py`` actually trains and
evaluates on, and ``rollout`` its ``t_test`` (frames predicted at evaluation).
A run config may add entries of its own under ``data.custom``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nestor_ds.errors import UserError

SourceFormat = Literal[
    "fno_mat",
    "pdebench_cfd",
    "pdebench_cfd3d",
    "pdebench_grouped",
    "pdearena_ns",
    "cfdbench",
    "the_well",
    "poseidon_wave",
    "weatherbench",
    "shards",
]
SplitRule = Literal["tail", "fraction", "files", "cases", "folders", "poseidon", "years", "none"]


class DatasetInfo(BaseModel):
    """What the system must know of a data set before it reads a byte of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: SourceFormat = Field(description="original file layout the reader accepts")
    grid: tuple[int, ...] = Field(
        min_length=2,
        max_length=3,
        description="grid of the data set as trained on, per space axis; resolution: N is shorthand for [N, N]",
    )
    channels: int = Field(gt=0, description="physical channels per grid point")
    frames: int = Field(gt=1, description="time steps per trajectory")
    train: int = Field(ge=0, description="training trajectories the published split gives for the real files")
    test: int = Field(ge=0, description="test trajectories the published split gives for the real files")
    weight: float = Field(gt=0, description="default mixing weight in pre-training")
    split: SplitRule = Field(
        "none",
        description="published split: tail (last split_test trajectories), fraction (last split_test "
        "share, DPOT's int(0.9 N) cut), files (PDEArena's split files), cases (CFDBench's seeded case split), "
        "folders (the Well's data/<split>/), poseidon (the last split_test trajectories test, the split_valid before "
        "them valid), years (WeatherBench: train to 2015, valid 2016, test from 2017)",
    )
    split_test: float = Field(0, ge=0, description="count (tail, poseidon) or share (fraction) of the test split")
    split_valid: int = Field(0, ge=0, description="poseidon: trajectories just before the test that are valid")
    dpot_train: int | None = Field(None, gt=0, description="DPOT trains on the first N train trajectories")
    dpot_test: int | None = Field(None, gt=0, description="DPOT evaluates the first N test trajectories")
    rollout: int | None = Field(None, gt=0, description="frames DPOT's evaluation predicts after t_in (t_test)")
    predicted_channels: int | None = Field(
        None, gt=0, description="leading channels that are predicted and scored (CFDBench: u, v; not the mask)"
    )
    periodic: bool = Field(
        False,
        description="periodic boundaries on every axis (patch jittering rolls the grid; otherwise it pads and crops)",
    )

    @model_validator(mode="before")
    @classmethod
    def _resolution_shorthand(cls, data: Any) -> Any:
        return resolution_shorthand(data, "grid")


def resolution_shorthand(data: Any, where: str) -> Any:
    """A raw config mapping with ``resolution: N`` (written before per-axis grids) turned into ``grid: [N, N]``."""
    if isinstance(data, dict) and "resolution" in data:
        if "grid" in data:
            raise ValueError(f"give {where} or the resolution shorthand for [N, N], not both")
        data = {k: v for k, v in data.items() if k != "resolution"} | {"grid": [data["resolution"]] * 2}
    return data


def _info(
    fmt: SourceFormat,
    res: int | tuple[int, ...],
    c: int,
    t: int,
    train: int,
    test: int,
    w: float,
    split: SplitRule,
    split_test: float,
    dpot: tuple[int, int],
    rollout: int,
    predicted: int | None = None,
    periodic: bool = False,
) -> DatasetInfo:
    return DatasetInfo(
        format=fmt,
        grid=(res, res) if isinstance(res, int) else res,
        channels=c,
        frames=t,
        train=train,
        test=test,
        weight=w,
        split=split,
        split_test=split_test,
        dpot_train=dpot[0],
        dpot_test=dpot[1],
        rollout=rollout,
        predicted_channels=predicted,
        periodic=periodic,
    )


_CNS = _info(
    fmt="pdebench_cfd",
    res=128,
    c=4,
    t=21,
    train=9000,
    test=1000,
    w=1,
    split="fraction",
    split_test=0.1,
    dpot=(9000, 200),
    rollout=11,
    periodic=True,
)

# PDEBench 3-D CFD (DPOT's make_master_file.py: 90/10 and 540/60, 21 frames, t_test 11; preprocess.py cuts the
# first int(0.9 N) for train)
_CNS3D = _info("pdebench_cfd3d", (128, 128, 128), 5, 21, 90, 10, 1, "fraction", 0.1, (90, 10), 11, periodic=True)

# Sources: FNO file sizes (N1200, N10000, N5000), DPOT preprocess.py (tails and int(0.9 N) cuts, PDEArena
# valid folded into train, CFDBench's 80/10/10 case split) and make_master_file.py (dpot_*, rollout).
REGISTRY: dict[str, DatasetInfo] = {
    "ns2d_fno_1e-5": _info("fno_mat", 64, 1, 20, 1000, 200, 8, "tail", 200, (1000, 200), 10, periodic=True),
    "ns2d_fno_1e-4": _info("fno_mat", 64, 1, 30, 9800, 200, 2, "tail", 200, (9800, 200), 20, periodic=True),
    "ns2d_fno_1e-3": _info("fno_mat", 64, 1, 50, 4800, 200, 8, "tail", 200, (1000, 200), 20, periodic=True),
    "ns2d_pdb_M1_eta1e-1_zeta1e-1": _CNS.model_copy(),
    "ns2d_pdb_M1_eta1e-2_zeta1e-2": _CNS.model_copy(),
    "ns2d_pdb_M1e-1_eta1e-1_zeta1e-1": _CNS.model_copy(),
    "ns2d_pdb_M1e-1_eta1e-2_zeta1e-2": _CNS.model_copy(),
    "swe_pdb": _info("pdebench_grouped", 128, 1, 101, 900, 100, 20, "fraction", 0.1, (900, 60), 91),
    "dr_pdb": _info("pdebench_grouped", 128, 2, 101, 900, 100, 20, "fraction", 0.1, (900, 60), 91),
    "ns2d_pda": _info("pdearena_ns", 128, 3, 14, 6500, 1300, 1, "files", 0, (6500, 650), 4),
    "ns2d_cond_pda": _info("pdearena_ns", 128, 3, 56, 3100, 200, 3, "files", 0, (3100, 200), 46),
    "cfdbench": _info("cfdbench", 64, 3, 20, 9000, 1000, 1, "cases", 0, (9000, 1000), 10, predicted=2),
    # NESTOR's downstream 512^2 PDEBench CFD sets (Event-AHU/OpenFusion NESTOR make_master_file.py: 900 train,
    # the first 20 test evaluated, t_test 11; preprocess.py: DPOT's [Vx, Vy, density, pressure], int(0.9 N) cut)
    **{
        f"ns2d_pdb_{m}_eta1e-8_zeta1e-8_{kind}_512": _CNS.model_copy(
            update={"grid": (512, 512), "train": 900, "test": 100, "dpot_train": 900, "dpot_test": 20}
        )
        for m in ("M1e-1", "M1")
        for kind in ("turb", "rand")
    },
    "ns3d_pdb_M1_rand": _CNS3D.model_copy(),
    "ns3d_pdb_M1e-1_rand": _CNS3D.model_copy(),
    "ns3d_pdb_M1_turb": _CNS3D.model_copy(
        update={"grid": (64, 64, 64), "train": 540, "test": 60, "dpot_train": 540, "dpot_test": 60}
    ),
}


def _well(grid: tuple[int, ...], channels: int, predicted: int, frames: int, periodic: bool) -> DatasetInfo:
    """A set of the Well: the splits are its folders, so train/test counts are what the folders hold (0 here)."""
    return DatasetInfo(
        format="the_well",
        grid=grid,
        channels=channels,
        frames=frames,
        train=0,
        test=0,
        weight=1,
        split="folders",
        predicted_channels=predicted,
        periodic=periodic,
    )


# The Well (PolymathicAI/the_well datasets/<name>/<name>.yaml): grid, and channels as our reader lays them out:
# the time-varying fields' components (predicted), then the time-invariant fields, the scalars and one mask per
# non-periodic boundary type (input only). Frames: the shortest trajectory. Spherical sets (planetswe,
# convective_envelope_rsg, post_neutron_star_merger) are refused by the reader.
REGISTRY.update(
    {
        "turbulent_radiative_layer_2D": _well((128, 384), 6, 4, 101, False),
        "shear_flow": _well((256, 512), 6, 4, 200, True),
        "rayleigh_benard": _well((512, 128), 7, 4, 200, False),
        "active_matter": _well((256, 256), 14, 11, 81, True),
        "gray_scott_reaction_diffusion": _well((128, 128), 4, 2, 1001, True),
        "viscoelastic_instability": _well((512, 512), 14, 8, 20, False),
        "helmholtz_staircase": _well((1024, 256), 6, 2, 50, False),
        "acoustic_scattering_discontinuous": _well((256, 256), 7, 3, 102, False),
        "acoustic_scattering_inclusions": _well((256, 256), 7, 3, 102, False),
        "acoustic_scattering_maze": _well((256, 256), 7, 3, 202, False),
        "euler_multi_quadrants_openBC": _well((512, 512), 7, 5, 101, False),
        "euler_multi_quadrants_periodicBC": _well((512, 512), 6, 5, 101, True),
        "MHD_64": _well((64, 64, 64), 9, 7, 100, True),
        "MHD_256": _well((256, 256, 256), 9, 7, 100, True),
        "rayleigh_taylor_instability": _well((128, 128, 128), 6, 4, 119, False),
        "supernova_explosion_64": _well((64, 64, 64), 11, 6, 59, False),
        "supernova_explosion_128": _well((128, 128, 128), 11, 6, 59, False),
        "turbulence_gravity_cooling": _well((64, 64, 64), 10, 6, 50, False),
        "turbulent_radiative_layer_3D": _well((128, 128, 256), 7, 5, 101, False),
        # our generated stand-in (data generate --suite well): shallow water in a walled basin, 1 x 2 grid
        "swe_basin_well": _well((32, 64), 5, 3, 12, False),
    }
)


def _wave(frames: int) -> DatasetInfo:
    """Poseidon's Wave-Layer / Wave-Gauss: u predicted, c (wave speed) input only; 10,512 trajectories, the last
    240 test and the 60 before them valid (scOT/problems/wave/acoustic.py); NESTOR trains on all 10,212 others
    with t_in 1 and predicts the rest (t_test = frames - 1, make_master_file.py)."""
    wave = _info("poseidon_wave", 128, 2, frames, 10212, 240, 1, "poseidon", 240, (10212, 240), frames - 1, 1)
    return wave.model_copy(update={"split_valid": 60})


# NESTOR's other downstream sets. ERA5 (make_master_file.py "EAR5": 128 x 256, 16 frames, t_in 6, 4 channels,
# 1449 train / 2905 test windows) in WeatherBench's files; variables, step and years are our documented default
# (data/formats/weatherbench.py), the counts what the folder holds.
REGISTRY.update(
    {
        "wave_layer": _wave(21),
        "wave_gauss": _wave(16),
        "era5": _info("weatherbench", (128, 256), 4, 16, 0, 0, 1, "years", 0, (1449, 2905), 10),
    }
)


class UnknownDataset(UserError):
    """A data set name neither the registry nor the config's ``data.custom`` knows."""


def lookup(name: str, extra: dict[str, DatasetInfo] | None = None) -> DatasetInfo:
    """Find a data set in the config's own entries first, then the built-in registry."""
    if extra and name in extra:
        return extra[name]
    if name in REGISTRY:
        return REGISTRY[name]
    known = sorted(set(REGISTRY) | set(extra or {}))
    raise UnknownDataset(f"unknown data set {name!r}; known: {', '.join(known)}")
