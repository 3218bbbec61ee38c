"""Diagnostic figures logged as run artifacts: sample predictions, rollout error
growth, expert routing and loss curves.

Figures are built as standalone ``matplotlib.figure.Figure`` objects rendered by
the Agg canvas: no pyplot state, no GUI backend switched for the whole process,
nothing left open after saving (safe in long training jobs and in notebooks).
Sizes are fixed (no ``bbox_inches="tight"``), so a PNG is exactly
``figsize * dpi`` pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

DPI = 100
SAMPLE_COLUMNS = ("input (last frame)", "truth", "prediction", "|error|")
SAMPLE_WIDTH_IN = 14.0
SAMPLE_ROW_IN = 3.0
SAMPLE_HEADER_IN = 0.6
CURVES_SIZE_IN = (8.0, 5.0)
HEATMAP_CELL_IN = 0.6  # annotated (small) matrices; larger ones get half that
HEATMAP_MAX_ANNOTATED = 12


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg whatever pyplot's backend is
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    fig.clear()  # free the artists now; the figure is not registered with pyplot
    return path


def _finite_range(*arrays: np.ndarray) -> tuple[float, float]:
    values = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:  # a constant field still needs a non-empty colour range
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def plot_sample(
    inp: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    channel_names: list[str],
    title: str,
    path: Path,
) -> Path:
    """Show one prediction next to its input and truth, one row per channel.

    Arrays are ``[X, Y, C]`` (``inp`` is the last input frame). Input, truth and
    prediction of a row share one colour scale so they can be compared by eye; the
    absolute error gets its own scale, and its title gives the channel's relative
    L2 error. X runs horizontally, Y vertically.
    """
    arrays = {"inp": np.asarray(inp), "truth": np.asarray(truth), "pred": np.asarray(pred)}
    for name, a in arrays.items():
        if a.ndim != 3:
            raise ValueError(f"plot_sample: {name} must be [X, Y, C], got shape {a.shape}")
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"plot_sample: inp, truth and pred must have the same [X, Y, C] shape, got {shapes}")
    channels = arrays["inp"].shape[2]
    if len(channel_names) != channels:
        raise ValueError(f"plot_sample: {len(channel_names)} channel names for {channels} channels")
    inp_a, truth_a, pred_a = (arrays[k].astype(np.float64) for k in ("inp", "truth", "pred"))

    fig = _new_figure(SAMPLE_WIDTH_IN, SAMPLE_HEADER_IN + SAMPLE_ROW_IN * channels)
    fig.suptitle(title, fontsize=14)
    axes = fig.subplots(channels, 4, squeeze=False)
    for c, cname in enumerate(channel_names):
        fields = [inp_a[..., c], truth_a[..., c], pred_a[..., c]]
        err = np.abs(pred_a[..., c] - truth_a[..., c])
        lo, hi = _finite_range(*fields)
        row = axes[c]
        images = [
            ax.imshow(data.T, origin="lower", cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
            for ax, data in zip(row[:3], fields)
        ]
        fig.colorbar(images[-1], ax=list(row[:3]), shrink=0.9, pad=0.01).set_label(cname)
        err_finite = err[np.isfinite(err)]
        err_max = float(err_finite.max()) if err_finite.size else 0.0
        err_image = row[3].imshow(
            err.T, origin="lower", cmap="magma", vmin=0.0, vmax=err_max or 1.0, interpolation="nearest"
        )
        fig.colorbar(err_image, ax=row[3], shrink=0.9, pad=0.01).set_label(f"|error| {cname}")
        denom = float(np.sqrt(np.nansum(truth_a[..., c] ** 2)))
        rel = float(np.sqrt(np.nansum(err**2))) / denom if denom > 0 else float("nan")
        for j, ax in enumerate(row):
            heading = SAMPLE_COLUMNS[j] if j < 3 else f"|error|  (rel. L2 {rel:.2e})"
            ax.set_title(heading if c == 0 or j == 3 else "", fontsize=11)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(cname, fontsize=12, fontweight="bold")
    return _save(fig, path)


def _log_axis_or_linear(ax: Any, values: list[np.ndarray]) -> None:
    """Log y when every value is positive; otherwise say why it stays linear."""
    finite = [v[np.isfinite(v)] for v in values]
    if all(np.all(v > 0) for v in finite) and any(v.size for v in finite):
        ax.set_yscale("log")
    else:
        ax.text(
            0.99,
            0.01,
            "linear y: values <= 0 present",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=8,
            color="grey",
        )


def _finish_curves(
    fig: Figure, ax: Any, values: list[np.ndarray], xlabel: str, ylabel: str, title: str, path: Path
) -> Path:
    """The axes, grid and legend every curve plot shares, then save."""
    _log_axis_or_linear(ax, values)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9, loc="best")
    return _save(fig, path)


def plot_rollout_errors(
    curves: dict[str, np.ndarray], path: Path, baselines: dict[str, np.ndarray] | None = None
) -> Path:
    """How the relative L2 error grows over autoregressive rollout steps, one line
    per data set (log y, since errors span orders of magnitude); ``baselines`` (persistence, by data set)
    are drawn dashed in the same colour beside each model curve."""
    if not curves:
        raise ValueError("plot_rollout_errors: no curves given")
    data = {}
    for name, curve in curves.items():
        a = np.asarray(curve, dtype=np.float64)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"plot_rollout_errors: curve {name!r} must be a non-empty 1-D array, got shape {a.shape}")
        data[name] = a
    fig = _new_figure(*CURVES_SIZE_IN)
    ax = fig.subplots()
    shown = list(data.values())
    for name, a in data.items():
        steps = np.arange(1, a.size + 1)
        (line,) = ax.plot(steps, a, marker="o" if a.size <= 30 else None, markersize=4, linewidth=1.8, label=name)
        base = np.asarray((baselines or {}).get(name, []), dtype=np.float64)
        if base.size == a.size:
            ax.plot(steps, base, linestyle="--", linewidth=1.2, color=line.get_color(), label="_persistence")
            shown.append(base)
    title = "Rollout error growth" + (" (dashed: persistence)" if baselines else "")
    return _finish_curves(fig, ax, shown, "rollout step", "relative L2 error", title, path)


def plot_expert_heatmap(
    load: np.ndarray,
    row_labels: list[str],
    col_labels: list[str],
    title: str,
    path: Path,
) -> Path:
    """Which experts each data set is routed to: rows are data sets, columns experts,
    cells the share of that data set's routes (rows normalised to 100 %). Shows
    specialisation (a bright cell per row) or collapse (one bright column)."""
    a = np.asarray(load, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"plot_expert_heatmap: load must be [datasets, experts], got shape {a.shape}")
    if a.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"plot_expert_heatmap: load has shape {a.shape} but there are {len(row_labels)} row labels "
            f"and {len(col_labels)} column labels"
        )
    if a.size == 0:
        raise ValueError("plot_expert_heatmap: load is empty")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError("plot_expert_heatmap: load must hold finite, non-negative counts")
    totals = a.sum(axis=1, keepdims=True)
    share = np.divide(a, totals, out=np.zeros_like(a), where=totals > 0)

    n_rows, n_cols = share.shape
    annotate = n_rows <= HEATMAP_MAX_ANNOTATED and n_cols <= HEATMAP_MAX_ANNOTATED
    cell = HEATMAP_CELL_IN if annotate else HEATMAP_CELL_IN / 2
    label_room = 0.09 * (max(len(s) for s in row_labels) + 12) + 1.0
    width = max(5.0, cell * n_cols + label_room + 1.8)
    height = max(3.5, cell * n_rows + 1.8)
    fig = _new_figure(width, height)
    ax = fig.subplots()
    vmax = max(float(share.max()), 1e-12)
    image = ax.imshow(share, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, format=PercentFormatter(xmax=1.0))
    bar.set_label("share of the data set's routes")
    long_cols = max(len(s) for s in col_labels) > 3
    ax.set_xticks(range(n_cols), col_labels, rotation=45 if long_cols else 0, ha="right" if long_cols else "center")
    empty = totals[:, 0] == 0  # data sets never routed (e.g. absent from the batch)
    ax.set_yticks(range(n_rows), [f"{s} (no routes)" if e else s for s, e in zip(row_labels, empty)])
    ax.set_xlabel("expert")
    ax.set_ylabel("data set")
    ax.set_title(f"{title}\n(uniform = {100.0 / n_cols:.1f} %)", fontsize=12)
    if annotate:
        for i in range(n_rows):
            for j in range(n_cols):
                v = share[i, j]
                dark = v / vmax < 0.6  # viridis is dark at the low end
                ax.text(
                    j,
                    i,
                    "–" if empty[i] else f"{100 * v:.0f}%",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if dark else "black",
                )
    return _save(fig, path)


def plot_loss_curves(history: dict[str, list[tuple[int, float]]], path: Path) -> Path:
    """Several named scalar histories (train loss, eval L2RE, ...) against the
    optimizer step on one log-y axis; non-finite points are skipped."""
    if not history:
        raise ValueError("plot_loss_curves: no curves given")
    data = {}
    for name, points in history.items():
        a = np.asarray(list(points), dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] == 0:
            raise ValueError(
                f"plot_loss_curves: curve {name!r} must be a non-empty list of (step, value) pairs, "
                f"got array shape {a.shape}"
            )
        a = a[np.argsort(a[:, 0], kind="stable")]
        data[name] = a[np.isfinite(a[:, 1])]
    fig = _new_figure(*CURVES_SIZE_IN)
    ax = fig.subplots()
    for name, a in data.items():
        ax.plot(a[:, 0], a[:, 1], marker="o" if len(a) <= 30 else None, markersize=3, linewidth=1.5, label=name)
    return _finish_curves(fig, ax, [a[:, 1] for a in data.values()], "step", "value", "Training curves", path)


def plot_rollout_frames(inp: np.ndarray, pred: np.ndarray, title: str, path: Path, frames: int = 4) -> Path:
    """A rollout without truth: the last input frame and ``frames`` predicted frames spread over the rollout,
    one row per channel (``inp`` [X, Y, C], ``pred`` [X, Y, T, C]), one colour scale per row."""
    inp, pred = np.asarray(inp, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    picks = sorted({int(round(i)) for i in np.linspace(0, pred.shape[2] - 1, min(frames, pred.shape[2]))})
    channels = inp.shape[-1]
    fig = _new_figure(3.0 * (1 + len(picks)), SAMPLE_HEADER_IN + SAMPLE_ROW_IN * channels)
    fig.suptitle(title, fontsize=14)
    axes = fig.subplots(channels, 1 + len(picks), squeeze=False)
    for c in range(channels):
        fields = [inp[..., c]] + [pred[:, :, t, c] for t in picks]
        lo, hi = _finite_range(*fields)
        images = []
        for j, (ax, data) in enumerate(zip(axes[c], fields)):
            image = ax.imshow(data.T, origin="lower", cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(("last input" if j == 0 else f"step {picks[j - 1] + 1}") if c == 0 else "", fontsize=11)
            ax.set_xticks([])
            ax.set_yticks([])
            images.append(image)
        fig.colorbar(images[-1], ax=list(axes[c]), shrink=0.9, pad=0.01).set_label(f"channel {c}")
    return _save(fig, path)


def plot_mid_planes(reference: np.ndarray, pred: np.ndarray, labels: tuple[str, str], title: str, path: Path) -> Path:
    """A 3-D field pair (``reference``, ``pred`` [X, Y, Z, C]) as its three orthogonal mid-planes (xy at mid z,
    xz at mid y, yz at mid x): per channel a row, per plane the reference beside the prediction, one colour
    scale per row."""
    reference, pred = np.asarray(reference, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    nx, ny, nz, channels = pred.shape
    planes = {
        f"xy (z={nz // 2})": lambda a: a[:, :, nz // 2],
        f"xz (y={ny // 2})": lambda a: a[:, ny // 2, :],
        f"yz (x={nx // 2})": lambda a: a[nx // 2, :, :],
    }
    fig = _new_figure(3.0 * 2 * len(planes), SAMPLE_HEADER_IN + SAMPLE_ROW_IN * channels)
    fig.suptitle(title, fontsize=14)
    axes = fig.subplots(channels, 2 * len(planes), squeeze=False)
    for c in range(channels):
        cut = [(name, take) for name, take in planes.items()]
        fields = [f for _, take in cut for f in (take(reference)[..., c], take(pred)[..., c])]
        lo, hi = _finite_range(*fields)
        images = []
        for j, (ax, data) in enumerate(zip(axes[c], fields)):
            image = ax.imshow(data.T, origin="lower", cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
            if c == 0:
                ax.set_title(f"{cut[j // 2][0]}: {labels[j % 2]}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            images.append(image)
        fig.colorbar(images[-1], ax=list(axes[c]), shrink=0.9, pad=0.01).set_label(f"channel {c}")
    return _save(fig, path)
