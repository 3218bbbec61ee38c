"""CFDBench: ``<problem>/<subset>/caseNNNN/{u.npy, v.npy, case.json}``, as the release ships.

There is no mask file. CFDBench's own loader (``src/dataset/<problem>.py``,
``load_case_data``, in the 2023 version DPOT copied) builds the features
``[T, 3, h, w]`` = (u, v, mask) from each case:
- cavity: the mask is all ones, nothing is padded;
- tube: mask ones, then one column on the left (u = ``vel_in``, v = 0, mask 0) and
  one row top and bottom (all 0);
- cylinder: mask 0 where ``(x - 0.5)^2 + (y - 0.5)^2 <= radius^2`` with
  ``x = x_min + j * width / w``, ``y = y_min + i * height / h``, then the tube's padding.
Frames are 0.1 s apart (``data_delta_time``). The cases of a problem are split by
its own seeded shuffle (``random.seed(0)``, 80/10/10; cavity rounds, tube and
cylinder truncate). DPOT keeps cavity, cylinder and tube (not dam), train and test
(not dev), cuts every case into 20-frame segments (the last one padded with the
last frame) and resizes them to 64 x 64 (bilinear, ``align_corners=True``).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nestor_ds.data.shards import DataError

from ...config.loading import parse_json_object
from ..trajectory import Trajectory
from ._common import PathLike, select

LAYOUT = "cfdbench"
CHANNELS = ["u", "v", "mask"]
REQUIRED = ("u.npy", "v.npy", "case.json")
PROBLEMS = ("cavity", "cylinder", "tube")  # DPOT's three; dam is not read
SUBSETS = ("prop", "bc", "geo")  # the order CFDBench's loader concatenates them in
FRAME_DT = 0.1
_ROUNDED_SPLIT = {"cavity"}  # CFDBench's cavity loader rounds the 80/10 cut, the others truncate
_KEYS = {"cylinder": ("vel_in", "radius", "x_min", "x_max", "y_min", "y_max"), "tube": ("vel_in",), "cavity": ()}


def write_cfdbench_case(case_dir: PathLike, u: np.ndarray, v: np.ndarray, case: Mapping[str, Any]) -> Path:
    """Write one case directory as the release has it: ``u.npy``, ``v.npy`` ``[T, H, W]`` and ``case.json``."""
    case_dir = Path(case_dir)
    u, v = np.asarray(u, dtype=np.float32), np.asarray(v, dtype=np.float32)
    if u.ndim != 3 or u.shape != v.shape:
        raise DataError(f"{case_dir}: u and v must both be [T, H, W], got {u.shape} and {v.shape}")
    case_dir.mkdir(parents=True, exist_ok=True)
    np.save(case_dir / "u.npy", u)
    np.save(case_dir / "v.npy", v)
    (case_dir / "case.json").write_text(json.dumps(dict(case), indent=2))
    return case_dir


def _case_number(path: Path) -> int:
    try:
        return int(path.name[4:])
    except ValueError:
        raise DataError(f"{path}: case folders are named caseNNNN ({LAYOUT} layout)") from None


def problem_cases(problem_dir: Path) -> list[Path]:
    """A problem's case folders in CFDBench's loader order: prop, bc, geo, each by case number."""
    cases: list[Path] = []
    for subset in SUBSETS:
        folder = problem_dir / subset
        if folder.is_dir():
            cases += sorted((p for p in folder.glob("case*") if p.is_dir()), key=_case_number)
    return cases


def problem_dirs(root: PathLike, problems: Sequence[str] = PROBLEMS) -> list[tuple[str, Path]]:
    """The problem folders present under a release root (or the root itself when it is one)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such directory ({LAYOUT} layout expected)")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory, the {LAYOUT} layout is a tree of case directories")
    unknown = sorted(set(problems) - set(PROBLEMS))
    if unknown:
        raise DataError(f"{root}: unknown CFDBench problem(s) {unknown}; this reader knows {list(PROBLEMS)}")
    if root.name in PROBLEMS:
        return [(root.name, root)] if root.name in problems else []
    return [(p, root / p) for p in problems if (root / p).is_dir()]


def case_split(cases: Sequence[Path], problem: str, seed: int = 0) -> dict[str, list[Path]]:
    """CFDBench's split of one problem's cases: a seeded shuffle, then 80 % train, 10 % dev, the rest test."""
    order = list(cases)
    random.Random(seed).shuffle(order)  # same sequence as random.seed(seed); random.shuffle(...)
    n = len(order)
    cut = round if problem in _ROUNDED_SPLIT else int
    n_train, n_dev = cut(n * 0.8), cut(n * 0.1)
    return {"train": order[:n_train], "dev": order[n_train : n_train + n_dev], "test": order[n_train + n_dev :]}


def find_cases(root: PathLike, problems: Sequence[str] = PROBLEMS) -> list[tuple[str, Path]]:
    """(problem, case folder) of every case under ``root``: problems in ``problems`` order, loader order within."""
    root = Path(root)
    if root.is_dir() and (root / "u.npy").is_file():  # a single case folder
        return [(_problem_of(root, _load_json(root)), root)]
    found = [(name, case) for name, folder in problem_dirs(root, problems) for case in problem_cases(folder)]
    if not found:
        raise DataError(
            f"{root}: no CFDBench case found (expected <problem>/<subset>/caseNNNN/ with problem in "
            f"{list(problems)} and subset in {list(SUBSETS)})"
        )
    return found


def _load_json(case_dir: Path) -> dict[str, Any]:
    path = case_dir / "case.json"
    if not path.is_file():
        raise DataError(f"{case_dir}: missing file 'case.json' of the {LAYOUT} layout")
    return parse_json_object(path.read_text(), path, DataError)


def _problem_of(case_dir: Path, case: Mapping[str, Any]) -> str:
    parent = case_dir.parent.parent.name
    if parent in PROBLEMS:
        return parent
    if "radius" in case:
        return "cylinder"
    if "vel_top" in case:
        return "cavity"
    if "vel_in" in case:
        return "tube"
    raise DataError(
        f"{case_dir}: cannot tell the CFDBench problem (not under cavity/cylinder/tube, "
        f"and case.json has none of radius, vel_top, vel_in)"
    )


def case_features(
    u: np.ndarray, v: np.ndarray, case: Mapping[str, Any], problem: str, where: PathLike = "case"
) -> np.ndarray:
    """``[T, h', w', 3]`` (u, v, mask) exactly as CFDBench's ``load_case_data`` derives them for ``problem``."""
    for key in _KEYS[problem]:
        if not isinstance(case.get(key), (int, float)):
            raise DataError(f"{where}: case.json needs a number {key!r} for the {problem} problem ({LAYOUT})")
    mask = np.ones_like(u)
    if problem == "cavity":
        return np.stack([u, v, mask], axis=-1)
    if problem == "cylinder":
        height, width = case["y_max"] - case["y_min"], case["x_max"] - case["x_min"]
        dx, dy = width / u.shape[2], height / u.shape[1]
        x = case["x_min"] + np.arange(u.shape[2]) * dx
        y = case["y_min"] + np.arange(u.shape[1]) * dy
        solid = (x[None, :] - 0.5) ** 2 + (y[:, None] - 0.5) ** 2 <= case["radius"] ** 2
        mask[:, solid] = 0
    left = ((0, 0), (0, 0), (1, 0))
    rows = ((0, 0), (1, 1), (0, 0))
    u = np.pad(np.pad(u, left, constant_values=case["vel_in"]), rows, constant_values=0)
    v = np.pad(np.pad(v, left, constant_values=0), rows, constant_values=0)
    mask = np.pad(np.pad(mask, left, constant_values=0), rows, constant_values=0)
    return np.stack([u, v, mask], axis=-1)


def dpot_segments(features: np.ndarray, frames: int, size: int) -> np.ndarray:
    """DPOT's cut of one case ``[T, h, w, C]`` into ``[S, frames, size, size, C]`` segments.

    The last segment is filled up with the last frame; the resize is bilinear with
    ``align_corners=True`` in float64, as DPOT's ``split_trajectory``.
    """
    import torch
    import torch.nn.functional as F

    steps = features.shape[0]
    count = math.ceil(steps / frames)
    padded = np.zeros((count * frames, *features.shape[1:]), dtype=np.float64)
    padded[:steps] = features
    padded[steps:] = features[-1]
    chw = torch.from_numpy(np.ascontiguousarray(padded.transpose(0, 3, 1, 2)))
    resized = F.interpolate(chw, size=(size, size), mode="bilinear", align_corners=True).numpy()
    return resized.reshape(count, frames, features.shape[-1], size, size).transpose(0, 1, 3, 4, 2)


def _load_case(problem: str, case_dir: Path) -> tuple[np.ndarray, dict[str, Any]]:
    for name in REQUIRED:
        if not (case_dir / name).is_file():
            raise DataError(f"{case_dir}: missing file {name!r} of the {LAYOUT} layout")
    case = _load_json(case_dir)
    try:
        u = np.load(case_dir / "u.npy", allow_pickle=False)
        v = np.load(case_dir / "v.npy", allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{case_dir}: u.npy/v.npy not plain .npy arrays: {exc}") from exc
    if u.ndim != 3 or u.shape != v.shape:
        raise DataError(f"{case_dir}: u.npy {u.shape} and v.npy {v.shape} must both be [T, H, W]")
    return case_features(u, v, case, problem, case_dir), case


def _numeric(case: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in case.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def read_cfdbench(
    root: PathLike,
    dataset: str,
    split: str | None = None,
    indices: Sequence[int] | range | None = None,
    problems: Sequence[str] = PROBLEMS,
    segment_frames: int | None = None,
    resize: int | None = None,
) -> Iterator[Trajectory]:
    """Yield CFDBench cases as ``[T, h, w, 3]`` (u, v, mask) trajectories, in :func:`find_cases` order.

    ``root`` is the release root, one problem folder, or one case folder; ``indices``
    pick cases by position. With ``segment_frames``/``resize`` each case becomes
    DPOT's segments (index ``1000 * case position + segment``). Conditioning is the
    numeric entries of ``case.json`` as stored; dt is 0.1 s. ``split`` must be None:
    the published split is :func:`case_split`, applied by the converter.
    """
    root = Path(root)
    if split is not None:
        raise DataError(
            f"{root}: the {LAYOUT} layout keeps no split folders; the split is CFDBench's seeded case split"
        )
    cases = find_cases(root, problems)
    chosen = select(indices, len(cases), root, what="cases")
    for i in chosen:  # cheap stat calls now, so a broken tree fails before training starts
        for name in REQUIRED:
            if not (cases[i][1] / name).is_file():
                raise DataError(f"{cases[i][1]}: missing file {name!r} of the {LAYOUT} layout")
    return _stream(dataset, [(i, *cases[i]) for i in chosen], segment_frames, resize)


def _stream(
    dataset: str, chosen: list[tuple[int, str, Path]], segment_frames: int | None, resize: int | None
) -> Iterator[Trajectory]:
    for i, problem, case_dir in chosen:
        features, case = _load_case(problem, case_dir)
        cond = _numeric(case)
        if segment_frames is None:
            _, h, w, _ = features.shape
            yield Trajectory(dataset, i, features, list(CHANNELS), FRAME_DT, 1.0 / h, 1.0 / w, cond)
            continue
        size = resize or features.shape[1]
        for s, seg in enumerate(dpot_segments(features, segment_frames, size)):
            yield Trajectory(dataset, 1000 * i + s, seg, list(CHANNELS), FRAME_DT, 1.0 / size, 1.0 / size, cond)
