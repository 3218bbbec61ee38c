"""Readers and writers for the original PDE file layouts of DESIGN.md section 3.

Every reader has the signature
``read_x(path, dataset, split=None, indices=None) -> Iterator[Trajectory]``:
it checks the layout when called (raising ``ValueError`` that names the file and
the key) and then streams one trajectory at a time, so a file far larger than
memory can be read. ``indices`` are 0-based positions in the file (or split);
``split`` is only meaningful for ``pdearena_ns``, whose files hold split groups;
the other layouts keep one pool per file (the Well: one split per folder; WeatherBench: split by year, named by
``split``) and reject a split. The published splits
of every layout are cut by :mod:`nestor_ds.data.splits`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from nestor_ds.data.shards import DataError

from ..trajectory import Trajectory
from ._common import PathLike
from .cfdbench import (
    case_features,
    case_split,
    dpot_segments,
    find_cases,
    read_cfdbench,
    write_cfdbench_case,
)
from .fno_mat import count_fno_mat, read_fno_mat, write_fno_mat
from .pdearena_ns import (
    count_pdearena_ns,
    pdearena_file_name,
    pdearena_files,
    pdearena_split_of,
    read_pdearena_ns,
    write_pdearena_ns,
)
from .pdebench_cfd import (
    count_pdebench_cfd,
    parse_conditioning,
    read_pdebench_cfd,
    write_pdebench_cfd,
)
from .pdebench_cfd3d import count_pdebench_cfd3d, read_pdebench_cfd3d, write_pdebench_cfd3d
from .pdebench_grouped import (
    count_pdebench_grouped,
    read_pdebench_grouped,
    write_pdebench_grouped,
)
from .poseidon_wave import count_poseidon_wave, read_poseidon_wave, write_poseidon_wave
from .the_well import count_well, inspect_well, read_well, well_split_files, write_well
from .weatherbench import count_weatherbench, read_weatherbench, write_weatherbench

Reader = Callable[..., Iterator[Trajectory]]

READERS: dict[str, Reader] = {
    "fno_mat": read_fno_mat,
    "pdebench_cfd": read_pdebench_cfd,
    "pdebench_cfd3d": read_pdebench_cfd3d,
    "pdebench_grouped": read_pdebench_grouped,
    "pdearena_ns": read_pdearena_ns,
    "cfdbench": read_cfdbench,
    "the_well": read_well,
    "poseidon_wave": read_poseidon_wave,
    "weatherbench": read_weatherbench,
}


def open_source(
    path: PathLike,
    fmt: str,
    dataset: str,
    split: str | None = None,
    indices: Sequence[int] | range | None = None,
    **options: object,
) -> Iterator[Trajectory]:
    """Dispatch to the reader of registry format ``fmt``; one entry point for every original layout.

    ``options`` go to the reader (``channel_order`` for pdebench_cfd and pdebench_cfd3d; ``problems``,
    ``segment_frames``, ``resize`` for cfdbench).

    Raises ``ValueError`` naming the path and format when ``fmt`` has no reader
    (e.g. "shards", which is not an original layout) or the file is not in it.
    """
    reader = READERS.get(fmt)
    if reader is None:
        known = ", ".join(sorted(READERS))
        raise DataError(f"{path}: unknown source format {fmt!r}; readers exist for {known}")
    try:
        return reader(path, dataset, split=split, indices=indices, **options)
    except ValueError as exc:
        if str(Path(path)) in str(exc) and fmt in str(exc):
            raise
        raise DataError(f"{path} (format {fmt!r}): {exc}") from exc


__all__ = [
    "READERS",
    "case_features",
    "case_split",
    "count_fno_mat",
    "count_pdearena_ns",
    "count_pdebench_cfd",
    "count_pdebench_cfd3d",
    "count_pdebench_grouped",
    "count_poseidon_wave",
    "count_weatherbench",
    "count_well",
    "inspect_well",
    "dpot_segments",
    "find_cases",
    "open_source",
    "parse_conditioning",
    "pdearena_file_name",
    "pdearena_files",
    "pdearena_split_of",
    "read_cfdbench",
    "read_fno_mat",
    "read_pdearena_ns",
    "read_pdebench_cfd",
    "read_pdebench_cfd3d",
    "read_pdebench_grouped",
    "read_poseidon_wave",
    "read_weatherbench",
    "read_well",
    "well_split_files",
    "write_cfdbench_case",
    "write_fno_mat",
    "write_pdearena_ns",
    "write_pdebench_cfd",
    "write_pdebench_cfd3d",
    "write_pdebench_grouped",
    "write_poseidon_wave",
    "write_weatherbench",
    "write_well",
]
