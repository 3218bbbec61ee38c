"""``nestor-ds predict``: a user's fields from ``.npy`` or HDF5, the rollout written beside a figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nestor_ds.config import ConfigError


def read_fields(path: Path, key: str | None = None) -> np.ndarray:
    """[*space, T, C] or [B, *space, T, C] float32 (2-D or 3-D space) from an ``.npy`` file or an HDF5 dataset
    (``key``; default the file's only dataset)."""
    if not path.is_file():
        raise ConfigError(f"input {path} does not exist")
    if path.suffix == ".npy":
        try:
            data = np.load(path, allow_pickle=False)  # never unpickle a user's file
        except ValueError as err:
            raise ConfigError(f"{path}: not a plain .npy array ({err})") from None
    elif path.suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as f:
            names: list[str] = []
            f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
            if key is None:
                if len(names) != 1:
                    raise ConfigError(f"{path} holds datasets {names}: choose one with --key")
                key = names[0]
            if key not in names:
                raise ConfigError(f"{path} has no dataset {key!r}; it holds {names}")
            data = f[key][()]
    else:
        raise ConfigError(f"input {path}: expected .npy, .h5 or .hdf5")
    if data.ndim not in (4, 5, 6) or not np.issubdtype(data.dtype, np.number):
        raise ConfigError(f"{path}: expected a numeric [(B,) X, Y(, Z), T, C] array, got {data.dtype} {data.shape}")
    return data.astype(np.float32)


def predict_files(
    model: str | Path,
    source: Path,
    out: Path,
    steps: int,
    key: str | None = None,
    device: str = "cpu",
    dataset: str | None = None,
) -> dict[str, Path]:
    """Roll the model out from the input's first t_in frames; write the prediction (same format as the input)
    and a figure: truth beside prediction when the input holds the frames that follow, else the rollout (a 3-D
    model: the three orthogonal mid-planes)."""
    from nestor_ds.inference.predictor import Predictor
    from nestor_ds.tracking.plots import plot_mid_planes, plot_rollout_frames, plot_sample

    fields = read_fields(source, key)
    predictor = Predictor(model, device)
    dims = predictor.cfg.model.dims
    pred = predictor.rollout(fields, steps, dataset=dataset)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    if source.suffix == ".npy":
        written["prediction"] = out / "prediction.npy"
        np.save(written["prediction"], pred)
    else:
        import h5py

        written["prediction"] = out / "prediction.h5"
        with h5py.File(written["prediction"], "w") as f:
            f["prediction"] = pred
    t_in = predictor.cfg.model.t_in
    pred_np = np.asarray(pred)
    first, pred0 = (fields, pred_np) if fields.ndim == dims + 2 else (fields[0], pred_np[0])
    future = first[..., t_in : t_in + steps, :]
    figure = out / "prediction.png"
    if dims == 3:
        if future.shape[-2] > 0:
            last = future.shape[-2] - 1
            labels, reference, title = ("truth", "prediction"), future[..., last, :], f"{source.name}: step {last + 1}"
        else:
            last = pred0.shape[-2] - 1
            labels, reference = ("last input", f"step {last + 1}"), first[..., t_in - 1, :]
            title = f"{source.name}: {steps}-step rollout"
        plot_mid_planes(reference, pred0[..., last, :], labels, title, figure)
    elif future.shape[2] > 0:
        last = future.shape[2] - 1
        plot_sample(
            first[:, :, t_in - 1],
            future[:, :, last],
            pred0[:, :, last],
            [f"channel {c}" for c in range(first.shape[-1])],
            f"{source.name}: step {last + 1}",
            figure,
        )
    else:
        plot_rollout_frames(first[:, :, t_in - 1], pred0, f"{source.name}: {steps}-step rollout", figure)
    written["figure"] = figure
    return written
