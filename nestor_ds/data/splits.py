"""The published train/test splits, cut from the files exactly as the original projects cut them.

A plan maps each split to a list of :class:`Item` (one trajectory, or one CFDBench
case) so the converter can cut it into shards and hand shards to worker processes.
Rules (``DatasetInfo.split``; sources in the README's split table):
- ``tail``: the last ``split_test`` trajectories are test (FNO: last 200);
- ``fraction``: the first ``int((1 - split_test) * N)`` are train, the rest test
  (DPOT's ``int(9/10 * N)`` for PDEBench CNS; 900/100 for SWE and DR);
- ``files``: PDEArena's own split files, ``valid`` folded into train as DPOT does;
- ``cases``: CFDBench's seeded case split per problem; DPOT drops ``dev``;
- ``folders``: the Well's ``data/{train,valid,test}`` folders, ``valid`` kept as its own split (DPOT never
  used the Well, so ``--valid dpot`` means the Well's own split here);
- ``poseidon``: Poseidon's ``post_init``: the last ``split_test`` (240) test, the ``split_valid`` (60) before
  them valid, the rest train; ``--test`` resizes the test block and the valid block keeps its 1:4 ratio;
- ``years``: WeatherBench's years (train to 2015, valid 2016, test from 2017), windows as the reader cuts them.
For the downstream sets ``--valid dpot`` keeps valid separate (DPOT never used them; NESTOR keeps a valid file).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nestor_ds.config.datasets import DatasetInfo
from nestor_ds.data import formats as F
from nestor_ds.data.shards import DataError
from nestor_ds.data.trajectory import Trajectory

ValidChoice = Literal["dpot", "train", "separate", "drop"]
COUNTERS = {
    "fno_mat": F.count_fno_mat,
    "pdebench_cfd": F.count_pdebench_cfd,
    "pdebench_cfd3d": F.count_pdebench_cfd3d,
    "pdebench_grouped": F.count_pdebench_grouped,
}


@dataclass(frozen=True)
class Item:
    """One thing a reader reads: trajectory ``index`` of ``path`` (in split group ``group``), or a case folder."""

    path: str
    index: int = 0
    group: str | None = None


def _cut(n: int, info: DatasetInfo, test: float | None, source: Path) -> int:
    """Number of leading trajectories that go to train."""
    rule, amount = info.split, info.split_test
    if test is not None:  # user override: a count (>= 1) or a share (< 1)
        rule, amount = ("tail", test) if test >= 1 else ("fraction", test)
    if rule == "tail":
        if amount >= n:
            raise DataError(
                f"{source}: holds {n} trajectories, but the published split puts the last "
                f"{int(amount)} in test; give --test N or --test FRACTION for a smaller file"
            )
        return n - int(amount)
    if rule == "fraction":
        n_train = int((1 - amount) * n)
        if not 0 < n_train < n:
            raise DataError(f"{source}: {n} trajectories cannot be split {1 - amount:.0%}/{amount:.0%}")
        return n_train
    raise DataError(f"{source}: split rule {rule!r} does not apply to a single file")


def _plan_pdearena(source: str | Path, valid: ValidChoice) -> dict[str, list[Item]]:
    plan: dict[str, list[Item]] = {"train": [], "test": []}
    valid_to = {"dpot": "train", "train": "train", "separate": "valid", "drop": None}[valid]
    for path in F.pdearena_files(source):
        named = F.pdearena_split_of(path)
        counts = F.count_pdearena_ns(path)
        if named not in counts:
            raise DataError(f"{path}: named a {named} file but holds groups {sorted(counts)} (pdearena_ns layout)")
        target = valid_to if named == "valid" else named
        if target is not None:
            plan.setdefault(target, []).extend(Item(str(path), i, named) for i in range(counts[named]))
    return plan


def _plan_cfdbench(source: str | Path, valid: ValidChoice, problems: Sequence[str]) -> dict[str, list[Item]]:
    plan: dict[str, list[Item]] = {"train": [], "test": []}
    dev_to = {"dpot": None, "train": "train", "separate": "valid", "drop": None}[valid]
    found = F.cfdbench.problem_dirs(source, problems)
    for problem, folder in found:
        parts = F.case_split(F.cfdbench.problem_cases(folder), problem)
        plan["train"] += [Item(str(p)) for p in parts["train"]]
        plan["test"] += [Item(str(p)) for p in parts["test"]]
        if dev_to is not None:
            plan.setdefault(dev_to, []).extend(Item(str(p)) for p in parts["dev"])
    if not any(plan.values()):
        raise DataError(
            f"{source}: no CFDBench case found (expected <problem>/<subset>/caseNNNN/ with problem in {list(problems)})"
        )
    return plan


def _valid_own(valid: ValidChoice) -> str | None:
    """Where a valid split goes for sets DPOT never used (the Well, Poseidon, WeatherBench): its own by default."""
    return {"dpot": "valid", "separate": "valid", "train": "train", "drop": None}[valid]


def _plan_well(source: str | Path, valid: ValidChoice) -> dict[str, list[Item]]:
    plan: dict[str, list[Item]] = {"train": [], "test": []}
    valid_to = _valid_own(valid)
    for split, files in F.well_split_files(source).items():
        target = valid_to if split == "valid" else split
        if target is not None:
            plan.setdefault(target, []).extend(Item(str(p), i) for p in files for i in range(F.count_well(p)))
    return plan


def _plan_poseidon(
    info: DatasetInfo, source: str | Path, test: float | None, valid: ValidChoice
) -> dict[str, list[Item]]:
    n = F.count_poseidon_wave(source)
    n_test, n_valid = int(info.split_test), info.split_valid
    if test is not None:
        n_test = int(test) if test >= 1 else int(round(test * n))
        n_valid = int(round(n_test * info.split_valid / info.split_test)) if info.split_test else 0
    n_train = n - n_test - n_valid
    if n_test < 1 or n_train < 1:
        raise DataError(
            f"{source}: holds {n} trajectories, but the split puts the last {n_test} in test and the {n_valid} "
            f"before them in valid; give --test N or --test FRACTION for a smaller file"
        )
    valid_to = _valid_own(valid)
    plan: dict[str, list[Item]] = {
        "train": [Item(str(source), i) for i in range(n_train)],
        "test": [Item(str(source), i) for i in range(n - n_test, n)],
    }
    if valid_to is not None and n_valid:
        plan.setdefault(valid_to, []).extend(Item(str(source), i) for i in range(n_train, n - n_test))
    return plan


def _plan_weatherbench(source: str | Path, valid: ValidChoice) -> dict[str, list[Item]]:
    plan: dict[str, list[Item]] = {"train": [], "test": []}
    valid_to = _valid_own(valid)
    for split, n in F.count_weatherbench(source).items():
        target = valid_to if split == "valid" else split
        if target is not None:
            plan.setdefault(target, []).extend(Item(str(source), i, split) for i in range(n))
    for split in ("train", "test"):
        if not plan[split]:
            raise DataError(
                f"{source}: no {split} window (WeatherBench's years: train to 2015, valid 2016, test from 2017; "
                f"a year holds a window per 16 six-hourly frames)"
            )
    return plan


def plan_splits(
    info: DatasetInfo,
    fmt: str,
    source: str | Path,
    *,
    test: float | None = None,
    valid: ValidChoice = "dpot",
    problems: Sequence[str] = F.cfdbench.PROBLEMS,
) -> dict[str, list[Item]]:
    """{split: items} for ``source`` under the published split of ``info`` (``test`` overrides it)."""
    if fmt == "pdearena_ns":
        return _plan_pdearena(source, valid)
    if fmt == "cfdbench":
        return _plan_cfdbench(source, valid, problems)
    if fmt == "the_well":
        if test is not None:
            raise DataError(f"{source}: the Well's splits are its folders; --test does not apply")
        return _plan_well(source, valid)
    if fmt == "poseidon_wave":
        return _plan_poseidon(info, source, test, valid)
    if fmt == "weatherbench":
        if test is not None:
            raise DataError(f"{source}: WeatherBench is split by year; --test does not apply")
        return _plan_weatherbench(source, valid)
    if fmt not in COUNTERS:
        raise DataError(f"{source}: no published split for format {fmt!r}")
    n = COUNTERS[fmt](source)
    n_train = _cut(n, info, test, Path(source))
    return {
        "train": [Item(str(source), i) for i in range(n_train)],
        "test": [Item(str(source), i) for i in range(n_train, n)],
    }


def read_items(
    fmt: str, dataset: str, items: Sequence[Item], first: int = 0, **options: object
) -> Iterator[Trajectory]:
    """Read ``items`` in order; each trajectory's index becomes its position in the split (``first`` = position
    of ``items[0]``); CFDBench segments get ``1000 * case position + segment``."""
    pos = 0
    while pos < len(items):
        end = pos + 1
        while (
            end < len(items)
            and (items[end].path, items[end].group) == (items[pos].path, items[pos].group)
            and fmt != "cfdbench"
        ):
            end += 1
        group = items[pos:end]
        stream = F.open_source(
            group[0].path,
            fmt,
            dataset,
            split=group[0].group,
            indices=None if fmt == "cfdbench" else [it.index for it in group],
            **options,
        )
        if fmt == "cfdbench":
            for traj in stream:
                traj.index = 1000 * (first + pos) + traj.index % 1000
                yield traj
        else:
            for k, traj in enumerate(stream):
                traj.index = first + pos + k
                yield traj
        pos = end
