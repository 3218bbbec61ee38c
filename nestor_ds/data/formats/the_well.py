"""The Well (PolymathicAI/the_well): one HDF5 file of several trajectories, fields grouped by tensor order.

A set ships as ``<name>/data/{train,valid,test}/*.hdf5``; the splits are those folders. Each file carries its
own facts (``docs/data_format.md``, read by ``the_well/data/datasets.py``):

- root attributes ``dataset_name``, ``grid_type``, ``n_spatial_dims``, ``n_trajectories``,
  ``simulation_parameters`` (and one attribute per parameter);
- ``dimensions``: ``time`` and one coordinate array per space axis named in ``spatial_dims``;
- ``boundary_conditions``: one group per condition (``bc_type`` PERIODIC / WALL / OPEN, ``associated_dims``,
  a boolean ``mask`` over those axes);
- ``scalars`` and ``t0_fields`` / ``t1_fields`` / ``t2_fields``: ``[traj, T, *space, D^order]`` arrays with
  a ``field_names`` attribute per group and ``sample_varying`` / ``time_varying`` / ``dim_varying`` flags per
  array (an array that does not vary over trajectories or time has no such axis; an axis a field does not
  vary over has size 1).

What a trajectory becomes (the channel order is the_well's own flattening):

1. predicted: the time-varying fields, order 0, then 1, then 2, each tensor flattened row-major and named as
   the_well names them (``velocity_x``, ``stress_xy``);
2. input only: the time-invariant fields (same naming), then the scalars (time-varying ones per frame,
   constant ones also kept in ``Trajectory.conditioning``), then one mask channel per non-periodic boundary
   type, ``boundary_wall`` / ``boundary_open``: 1 on the points where a boundary of that type is defined.

``dt`` and ``dx``/``dy``/``dz`` come from ``dimensions``. Spherical (and any non-cartesian) grids are refused:
their cells are not the uniform boxes the patch embedding and the FFT assume.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nestor_ds.data.shards import DataError

from ..trajectory import Trajectory
from ._common import PathLike, open_h5, require, select, step

LAYOUT = "the_well"
ORDERS = ("t0_fields", "t1_fields", "t2_fields")
ROOT_ATTRS = ("dataset_name", "grid_type", "n_spatial_dims", "n_trajectories")
SPLITS = ("train", "valid", "test")
BC_TYPES = ("PERIODIC", "WALL", "OPEN")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return _text(value.item())
    return str(value)


def _names(value: Any) -> list[str]:
    """An attribute holding names: a list, an array of (byte) strings or a single string."""
    if isinstance(value, (str, bytes)):
        return [_text(value)]
    return [_text(v) for v in np.atleast_1d(np.asarray(value, dtype=object))]


def _attr(obj: h5py.HLObject, key: str, path: PathLike) -> Any:
    if key not in obj.attrs:
        where = obj.name if obj.name != "/" else "the root"
        raise DataError(f"{path}: missing attribute {key!r} of {where} ({LAYOUT} layout)")
    return obj.attrs[key]


def _flag(obj: h5py.HLObject, key: str, path: PathLike) -> bool:
    return bool(np.asarray(_attr(obj, key, path)).item())


@dataclass(frozen=True)
class _Field:
    """One array of a ``t*_fields`` or ``scalars`` group and how to index it."""

    name: str
    order: int  # tensor order; -1 for a scalar
    channels: list[str]
    time_varying: bool
    sample_varying: bool
    dim_varying: tuple[bool, ...]


@dataclass(frozen=True)
class WellFile:
    """The facts of one Well file, read from its own attributes."""

    name: str
    axes: list[str]
    grid: tuple[int, ...]
    trajectories: int
    steps: int
    fields: list[_Field]  # time-varying fields: predicted
    constants: list[_Field]  # time-invariant fields
    scalars: list[_Field]
    boundaries: dict[str, np.ndarray]  # non-periodic type -> mask broadcastable to the grid
    parameters: dict[str, float]

    @property
    def channels(self) -> list[str]:
        """Every channel in stored order: predicted, then input only."""
        parts = self.fields + self.constants + self.scalars
        return [c for f in parts for c in f.channels] + [f"boundary_{t.lower()}" for t in self.boundaries]

    @property
    def predicted(self) -> int:
        """Leading channels the model predicts: the time-varying fields' components."""
        return sum(len(f.channels) for f in self.fields)


def _component_names(name: str, order: int, axes: Sequence[str]) -> list[str]:
    """the_well's names of a flattened order-``order`` tensor: ``v_x, v_y``; ``s_xx, s_xy, s_yx, s_yy``."""
    suffixes = ["".join(p) for p in itertools.product(axes, repeat=order)]
    return [f"{name}_{s}" if s else name for s in suffixes]


def _fields(f: h5py.File, path: PathLike, axes: list[str]) -> list[_Field]:
    groups = [k for k in f.keys() if re.fullmatch(r"t\d+_fields", k)]
    unknown = sorted(set(groups) - set(ORDERS))
    if unknown:
        raise DataError(
            f"{path}: unknown field order {unknown[0]!r} (the Well defines t0_fields, t1_fields and t2_fields)"
        )
    out = []
    for order, group_name in enumerate(ORDERS):
        group = require(f, group_name, path, LAYOUT)
        for name in _names(_attr(group, "field_names", path)):
            ds = require(group, name, path, LAYOUT)
            if not isinstance(ds, h5py.Dataset):
                raise DataError(f"{path}: {group_name}/{name} is a group, expected a dataset ({LAYOUT} layout)")
            dims = tuple(bool(v) for v in np.atleast_1d(_attr(ds, "dim_varying", path)))
            field = _Field(
                name,
                order,
                _component_names(name, order, axes),
                _flag(ds, "time_varying", path),
                _flag(ds, "sample_varying", path),
                dims,
            )
            tail = ds.shape[ds.ndim - order :] if order else ()
            lead = int(field.sample_varying) + int(field.time_varying)
            if len(dims) != len(axes) or ds.ndim not in (lead + len(axes) + order, lead + sum(dims) + order):
                raise DataError(
                    f"{path}: {group_name}/{name} has shape {ds.shape}, which does not fit an order-{order} field on "
                    f"{len(axes)} axes (sample_varying={field.sample_varying}, time_varying={field.time_varying}, "
                    f"dim_varying={list(dims)})"
                )
            if any(n != len(axes) for n in tail):
                raise DataError(
                    f"{path}: {group_name}/{name} has shape {ds.shape}: an order-{order} field needs {order} trailing "
                    f"axes of size {len(axes)}"
                )
            out.append(field)
    return out


def _scalars(f: h5py.File, path: PathLike) -> list[_Field]:
    if "scalars" not in f:
        return []
    group = f["scalars"]
    out = []
    for name in _names(_attr(group, "field_names", path)):
        ds = require(group, name, path, LAYOUT)
        out.append(_Field(name, -1, [name], _flag(ds, "time_varying", path), _flag(ds, "sample_varying", path), ()))
    return out


def _boundaries(f: h5py.File, path: PathLike, axes: list[str], grid: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Non-periodic boundary type -> its mask, with size 1 on the axes it is not defined over (broadcastable to the
    grid; nothing grid-sized is built to inspect a file)."""
    masks: dict[str, np.ndarray] = {}
    if "boundary_conditions" not in f:
        return masks
    for key, bc in f["boundary_conditions"].items():
        kind = _text(_attr(bc, "bc_type", path)).upper()
        if kind not in BC_TYPES:
            raise DataError(f"{path}: boundary_conditions/{key} has bc_type {kind!r}; the Well knows {BC_TYPES}")
        dims = _names(_attr(bc, "associated_dims", path))
        bad = [d for d in dims if d not in axes]
        if bad:
            raise DataError(f"{path}: boundary_conditions/{key} names axis {bad[0]!r}, not one of {axes}")
        if kind == "PERIODIC":
            continue
        mask = np.asarray(require(bc, "mask", path, LAYOUT)[()], dtype=bool)
        if mask.shape != tuple(grid[axes.index(d)] for d in dims):
            raise DataError(f"{path}: boundary_conditions/{key}/mask has shape {mask.shape}, not that of axes {dims}")
        order = [axes.index(d) for d in dims]  # lay the mask's axes out in grid order, then broadcast
        expanded = np.moveaxis(mask, list(range(len(dims))), [sorted(order).index(o) for o in order])
        shape = [grid[i] if i in order else 1 for i in range(len(grid))]
        mask = expanded.reshape(shape)
        masks[kind] = masks[kind] | mask if kind in masks else mask
    return masks


def inspect_well(path: PathLike) -> WellFile:
    """Read the facts of one Well file (no field values); errors name the file and what is wrong."""
    with open_h5(path, LAYOUT) as f:
        return _inspect(f, path)


def _inspect(f: h5py.File, path: PathLike) -> WellFile:
    attrs = {k: _attr(f, k, path) for k in ROOT_ATTRS}
    grid_type = _text(attrs["grid_type"]).lower()
    if grid_type != "cartesian":
        raise DataError(
            f"{path}: grid_type {grid_type!r} is not supported, only cartesian (a spherical grid's cells are not "
            f"the uniform boxes patches and FFTs assume)"
        )
    dims_group = require(f, "dimensions", path, LAYOUT)
    axes = _names(_attr(dims_group, "spatial_dims", path))
    n_dims = int(np.asarray(attrs["n_spatial_dims"]).item())
    if n_dims not in (2, 3) or len(axes) != n_dims:
        raise DataError(f"{path}: n_spatial_dims={n_dims} with spatial_dims {axes}; 2 or 3 matching axes expected")
    grid = tuple(int(require(dims_group, a, path, LAYOUT).shape[-1]) for a in axes)
    steps = int(require(dims_group, "time", path, LAYOUT).shape[-1])
    fields = _fields(f, path, axes)
    boundaries = _boundaries(f, path, axes, grid)
    params = {}
    for p in _names(f.attrs.get("simulation_parameters", [])):
        value = np.asarray(_attr(f, p, path))
        if value.size == 1 and np.issubdtype(value.dtype, np.number):
            params[p] = float(value.item())
    info = WellFile(
        _text(attrs["dataset_name"]),
        axes,
        grid,
        int(np.asarray(attrs["n_trajectories"]).item()),
        steps,
        [x for x in fields if x.time_varying],
        [x for x in fields if not x.time_varying],
        _scalars(f, path),
        boundaries,
        params,
    )
    if not info.fields:
        raise DataError(f"{path}: no time-varying field in t0_fields, t1_fields or t2_fields: nothing to predict")
    return info


def count_well(path: PathLike) -> int:
    """Trajectories in one Well file (its ``n_trajectories`` attribute)."""
    return inspect_well(path).trajectories


def well_split_files(root: PathLike) -> dict[str, list[Path]]:
    """``{split: sorted files}`` of a set folder as it ships (``<root>/data/<split>/*.hdf5``; ``root`` may also
    be the ``data`` folder itself)."""
    base = Path(root)
    data = base / "data" if (base / "data").is_dir() else base
    found = {s: sorted([*(data / s).glob("*.hdf5"), *(data / s).glob("*.h5")]) for s in SPLITS if (data / s).is_dir()}
    if not any(found.values()):
        raise DataError(f"{root}: no Well files found (expected {base}/data/{{train,valid,test}}/*.hdf5)")
    return found


def _read_field(ds: h5py.Dataset, field: _Field, i: int, grid: tuple[int, ...], steps: int) -> np.ndarray:
    """[T, *grid, components] of trajectory ``i`` (time-invariant and constant axes broadcast)."""
    index = (i,) if field.sample_varying else ()
    data = np.asarray(ds[index] if index else ds[()], dtype=np.float32)
    if not field.time_varying:
        data = data[None]
    order = max(field.order, 0)
    if field.order < 0:  # a scalar: [T] or [] -> [T, 1, .., 1]
        data = data.reshape(data.shape[:1] + (1,) * len(grid))
    elif data.ndim != 1 + len(grid) + order:  # axes the field does not vary over were left out: put them back
        for axis, varies in enumerate(field.dim_varying):
            if not varies:
                data = np.expand_dims(data, 1 + axis)
    data = np.broadcast_to(data, (data.shape[0], *grid, *data.shape[1 + len(grid) :]))
    if data.shape[0] == 1:
        data = np.broadcast_to(data, (steps, *data.shape[1:]))
    return data.reshape(data.shape[0], *grid, -1)


def read_well(
    path: PathLike,
    dataset: str,
    split: str | None = None,
    indices: Sequence[int] | range | None = None,
) -> Iterator[Trajectory]:
    """Trajectories of one Well file (``split`` is the folder's business: rejected here)."""
    if split is not None:
        raise DataError(f"{path}: a Well file holds one split (its folder); got split={split!r}")
    with open_h5(path, LAYOUT) as f:
        info = _inspect(f, path)
        chosen = select(indices, info.trajectories, path)
        dims = f["dimensions"]
        spacing = [step(dims[a][()], 1.0 / n) for a, n in zip(info.axes, info.grid)]
        groups: Mapping[int, h5py.Group] = {o: f[g] for o, g in enumerate(ORDERS)}
        for i in chosen:
            time = np.asarray(dims["time"][i] if dims["time"].ndim == 2 else dims["time"][()])
            parts = [
                _read_field(groups[x.order][x.name], x, i, info.grid, info.steps) for x in info.fields + info.constants
            ]
            parts += [_read_field(f["scalars"][x.name], x, i, info.grid, info.steps) for x in info.scalars]
            parts += [
                np.broadcast_to(m.astype(np.float32)[None, ..., None], (info.steps, *info.grid, 1))  # onto the grid
                for m in info.boundaries.values()
            ]
            frames = np.concatenate(parts, axis=-1)
            constant = {
                x.name: float(
                    np.asarray(f["scalars"][x.name][i] if x.sample_varying else f["scalars"][x.name][()]).ravel()[0]
                )
                for x in info.scalars
                if not x.time_varying
            }
            yield Trajectory(
                dataset,
                i,
                frames,
                info.channels,
                step(time, 1.0),
                spacing[0],
                spacing[1],
                {**info.parameters, **constant},
                dz=spacing[2] if len(spacing) == 3 else None,
                predicted=info.predicted,
            )


def write_well(
    path: PathLike,
    dataset_name: str,
    coords: Mapping[str, np.ndarray],
    time: np.ndarray,
    fields: Mapping[str, np.ndarray],
    *,
    constant_fields: Mapping[str, np.ndarray] | None = None,
    scalars: Mapping[str, float] | None = None,
    walls: Sequence[str] = (),
    periodic: Sequence[str] = (),
) -> Path:
    """One file in the Well's layout: ``fields`` ``[traj, T, *space, D^order]`` (the order read from the trailing
    axes), ``constant_fields`` ``[traj, *space]`` (order 0, time-invariant), constant ``scalars``; a WALL
    condition at both ends of each axis in ``walls``, PERIODIC on ``periodic``."""
    axes = list(coords)
    grid = tuple(len(coords[a]) for a in axes)
    first = next(iter(fields.values()))
    n_traj = first.shape[0]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    scalars = dict(scalars or {})
    with h5py.File(p, "w") as f:
        f.attrs["dataset_name"] = dataset_name
        f.attrs["grid_type"] = "cartesian"
        f.attrs["n_spatial_dims"] = len(axes)
        f.attrs["n_trajectories"] = n_traj
        f.attrs["simulation_parameters"] = list(scalars)
        for k, value in scalars.items():
            f.attrs[k] = value
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = axes
        dims.create_dataset("time", data=np.asarray(time, dtype=np.float32)).attrs["sample_varying"] = False
        for a in axes:
            ds = dims.create_dataset(a, data=np.asarray(coords[a], dtype=np.float32))
            ds.attrs["sample_varying"], ds.attrs["time_varying"] = False, False
        bcs = f.create_group("boundary_conditions")
        for kind, chosen in (("WALL", walls), ("PERIODIC", periodic)):
            for a in chosen:
                mask = np.zeros(grid[axes.index(a)], dtype=bool)
                mask[[0, -1]] = True
                g = bcs.create_group(f"{a}_{kind.lower()}")
                g.attrs["associated_dims"] = [a]
                g.attrs["associated_fields"] = []
                g.attrs["bc_type"] = kind
                g.attrs["sample_varying"], g.attrs["time_varying"] = False, False
                g.create_dataset("mask", data=mask)
        group = f.create_group("scalars")
        group.attrs["field_names"] = list(scalars)
        for k, value in scalars.items():
            ds = group.create_dataset(k, data=np.array(value, dtype=np.float32))
            ds.attrs["sample_varying"], ds.attrs["time_varying"] = False, False
        by_order: dict[int, list[tuple[str, np.ndarray, bool]]] = {0: [], 1: [], 2: []}
        for k, arr in fields.items():
            by_order[arr.ndim - 2 - len(axes)].append((k, arr, True))
        for k, arr in (constant_fields or {}).items():
            by_order[0].append((k, arr, False))
        for order, name in enumerate(ORDERS):
            group = f.create_group(name)
            group.attrs["field_names"] = [k for k, _, _ in by_order[order]]
            for k, arr, varying in by_order[order]:
                ds = group.create_dataset(k, data=np.asarray(arr, dtype=np.float32))
                ds.attrs["dim_varying"] = [True] * len(axes)
                ds.attrs["sample_varying"], ds.attrs["time_varying"] = True, varying
    return p
