"""CFDBench: a directory per case with ``u.npy``, ``v.npy`` ``[T, H, W]`` and ``case.json``.

The geometry mask (1 = fluid) is kept as ``mask.npy [H, W]`` (all ones when
absent). Trajectories carry the mask both in ``Trajectory.mask`` and as a third
channel, so a model sees the geometry.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..trajectory import Trajectory
from ._common import PathLike, select

LAYOUT = "cfdbench"
CHANNELS = ["u", "v", "mask"]
REQUIRED = ("u.npy", "v.npy", "case.json")


def write_cfdbench_case(
    case_dir: PathLike,
    u: np.ndarray,
    v: np.ndarray,
    case: Mapping[str, Any],
    mask: np.ndarray | None = None,
) -> Path:
    """Write one case directory: ``u.npy``, ``v.npy`` ``[T, H, W]``, ``case.json`` and ``mask.npy`` if given."""
    case_dir = Path(case_dir)
    u, v = np.asarray(u, dtype=np.float32), np.asarray(v, dtype=np.float32)
    if u.ndim != 3 or u.shape != v.shape:
        raise ValueError(f"{case_dir}: u and v must both be [T, H, W], got {u.shape} and {v.shape}")
    if mask is not None and np.shape(mask) != u.shape[1:]:
        raise ValueError(f"{case_dir}: mask must be [H, W] = {u.shape[1:]}, got {np.shape(mask)}")
    case_dir.mkdir(parents=True, exist_ok=True)
    np.save(case_dir / "u.npy", u)
    np.save(case_dir / "v.npy", v)
    (case_dir / "case.json").write_text(json.dumps(dict(case), indent=2))
    if mask is not None:
        np.save(case_dir / "mask.npy", np.asarray(mask, dtype=np.float32))
    return case_dir


def write_cfdbench(
    root: PathLike,
    u: Sequence[np.ndarray],
    v: Sequence[np.ndarray],
    cases: Sequence[Mapping[str, Any]],
    masks: Sequence[np.ndarray | None] | None = None,
) -> list[Path]:
    """Write N cases under ``root`` as ``case0000``, ``case0001``, ... (sorted order = index order)."""
    if not len(u) == len(v) == len(cases) or (masks is not None and len(masks) != len(u)):
        raise ValueError(f"{root}: u, v, cases (and masks) must have the same length")
    masks = masks if masks is not None else [None] * len(u)
    return [
        write_cfdbench_case(Path(root) / f"case{k:04d}", u[k], v[k], cases[k], masks[k]) for k in range(len(u))
    ]


def find_cases(root: PathLike) -> list[Path]:
    """Case directories under ``root`` (itself included), in sorted path order; a case is a dir with ``u.npy``."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such directory ({LAYOUT} layout expected)")
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory, the {LAYOUT} layout is a tree of case directories")
    found = [p.parent for p in root.rglob("u.npy")]
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def _numeric(case: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, val in case.items():
        if isinstance(val, (int, float)) and not isinstance(val, bool) and math.isfinite(val):
            out[k] = float(val)
    return out


def _load_case(case_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    for name in REQUIRED:
        if not (case_dir / name).is_file():
            raise ValueError(f"{case_dir}: missing file {name!r} of the {LAYOUT} layout")
    try:
        u = np.load(case_dir / "u.npy", mmap_mode="r", allow_pickle=False)
        v = np.load(case_dir / "v.npy", mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{case_dir}: u.npy/v.npy not plain .npy arrays: {exc}") from exc
    if u.ndim != 3 or u.shape != v.shape:
        raise ValueError(f"{case_dir}: u.npy {u.shape} and v.npy {v.shape} must both be [T, H, W]")
    try:
        case = json.loads((case_dir / "case.json").read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{case_dir / 'case.json'}: not valid JSON: {exc}") from exc
    if not isinstance(case, dict):
        raise ValueError(f"{case_dir / 'case.json'}: expected a JSON object, got {type(case).__name__}")
    mask_path = case_dir / "mask.npy"
    if mask_path.is_file():
        mask = np.load(mask_path, allow_pickle=False)
        if mask.shape != u.shape[1:]:
            raise ValueError(f"{mask_path}: shape {mask.shape} does not match the grid {u.shape[1:]}")
    else:
        mask = np.ones(u.shape[1:], dtype=np.float32)
    return u, v, np.asarray(mask, dtype=np.float32), case


def read_cfdbench(
    root: PathLike,
    dataset: str,
    split: str | None = None,
    indices: Sequence[int] | range | None = None,
) -> Iterator[Trajectory]:
    """Yield ``[T, H, W, 3]`` trajectories (u, v, mask) of every case under ``root`` in sorted order.

    ``indices`` are positions in that order. Conditioning is the numeric entries of
    ``case.json``; dt is its ``dt`` (1.0 when absent); dx = height/H and dy = width/W
    when given, else 1/H and 1/W. The chosen cases' files are checked when this is
    called, their contents as they are read. ``split`` must be None: split with ``indices``.
    """
    root = Path(root)
    if split is not None:
        raise ValueError(f"{root}: the {LAYOUT} layout keeps no splits; select with indices")
    cases = find_cases(root)
    if not cases:
        raise ValueError(f"{root}: no case directory with 'u.npy' found, not the {LAYOUT} layout")
    chosen = select(indices, len(cases), root, what="cases")
    for i in chosen:  # cheap stat calls now, so a broken tree fails before training starts
        for name in REQUIRED:
            if not (cases[i] / name).is_file():
                raise ValueError(f"{cases[i]}: missing file {name!r} of the {LAYOUT} layout")
    return _stream(dataset, [(i, cases[i]) for i in chosen])


def _stream(dataset: str, chosen: list[tuple[int, Path]]) -> Iterator[Trajectory]:
    for i, case_dir in chosen:
        u, v, mask, case = _load_case(case_dir)
        _, h, w = u.shape
        cond = _numeric(case)
        dt = cond.get("dt", 1.0)
        dx = cond["height"] / h if "height" in cond else 1.0 / h
        dy = cond["width"] / w if "width" in cond else 1.0 / w
        planes = np.broadcast_to(mask, u.shape)
        data = np.stack([u, v, planes], axis=-1)
        yield Trajectory(dataset, i, data, list(CHANNELS), dt, dx, dy, cond, mask=mask)
