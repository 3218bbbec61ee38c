"""Every diagnostic plot writes a real PNG of the promised size; bad input fails clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from nestor_ds.tracking import plots


def _png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 5_000, f"{path} missing or nearly empty"
    return imread(path)


def _fields(c: int = 2, n: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.linspace(0, 2 * np.pi, n)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    truth = np.stack([np.sin(xx + k) * np.cos(yy) for k in range(c)], axis=-1)
    return np.roll(truth, 1, axis=0), truth, truth + 0.05 * np.cos(3 * xx)[..., None]


def test_sample_png_and_size(tmp_path: Path) -> None:
    inp, truth, pred = _fields(c=2)
    out = plots.plot_sample(inp, truth, pred, ["u", "v"], "ns2d step 100", tmp_path / "sub" / "s.png")
    image = _png(out)
    height = round((plots.SAMPLE_HEADER_IN + 2 * plots.SAMPLE_ROW_IN) * plots.DPI)
    assert image.shape == (height, round(plots.SAMPLE_WIDTH_IN * plots.DPI), 4)  # 660 x 1400 RGBA
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_curves_and_heatmap_pngs(tmp_path: Path) -> None:
    width, height = (round(v * plots.DPI) for v in plots.CURVES_SIZE_IN)
    rollout = plots.plot_rollout_errors(
        {"ns2d": 0.01 * 1.2 ** np.arange(10), "swe": np.linspace(0.002, 0.02, 10)}, tmp_path / "r.png"
    )
    assert _png(rollout).shape == (height, width, 4)
    history = {"train/loss": [(s, 1.0 / (1 + s)) for s in range(0, 200, 10)], "eval/l2re": [(100, 0.2), (0, 0.5)]}
    assert _png(plots.plot_loss_curves(history, tmp_path / "l.png")).shape == (height, width, 4)
    load = np.array([[90, 5, 5, 0], [10, 10, 40, 40], [0, 0, 0, 0]], dtype=float)  # last data set unrouted
    heat = _png(
        plots.plot_expert_heatmap(load, ["ns2d", "swe", "cfd"], ["E0", "E1", "E2", "E3"], "layer 0", tmp_path / "h.png")
    )
    assert heat.shape[2] == 4 and heat.shape[1] >= 5 * plots.DPI and heat.shape[0] >= 3.5 * plots.DPI


def test_bad_shapes_raise_clear_errors(tmp_path: Path) -> None:
    inp, truth, pred = _fields(c=2)
    with pytest.raises(ValueError, match=r"pred must be \[X, Y, C\], got shape \(16, 16\)"):
        plots.plot_sample(inp, truth, pred[..., 0], ["u", "v"], "t", tmp_path / "x.png")
    with pytest.raises(ValueError, match="same"):
        plots.plot_sample(inp, truth[:8], pred, ["u", "v"], "t", tmp_path / "x.png")
    with pytest.raises(ValueError, match="1 channel names for 2 channels"):
        plots.plot_sample(inp, truth, pred, ["u"], "t", tmp_path / "x.png")
    with pytest.raises(ValueError, match="curve 'ns2d' must be a non-empty 1-D array"):
        plots.plot_rollout_errors({"ns2d": np.ones((3, 2))}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no curves"):
        plots.plot_loss_curves({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="pairs"):
        plots.plot_loss_curves({"loss": [(1, 2, 3)]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"shape \(2, 3\) but there are 2 row labels and 4 column labels"):
        plots.plot_expert_heatmap(np.ones((2, 3)), ["a", "b"], ["0", "1", "2", "3"], "t", tmp_path / "x.png")
    with pytest.raises(ValueError, match="non-negative"):
        plots.plot_expert_heatmap(-np.ones((2, 2)), ["a", "b"], ["0", "1"], "t", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
