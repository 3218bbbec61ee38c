"""Prediction on a user's own fields: the model's training preparation, at the user's grid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from nestor_ds import Predictor, load_model
from nestor_ds.config import load_config
from nestor_ds.model import build_model
from nestor_ds.model.export import global_state_dict, save_consolidated

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny NESTOR at 32^2 written as a model folder, as export and import write it."""
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml", {"parallel.ep_size": 1})
    folder = tmp_path_factory.mktemp("model")
    model = build_model(cfg.model, seed=5)
    save_consolidated(global_state_dict(model), folder / "model.safetensors")
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return folder


def _manual(model, fields: torch.Tensor, res: int, channels: int, pad: float) -> torch.Tensor:
    """resize -> pad -> model -> resize, by hand, one step: [B, X, Y, T, c] -> [B, X, Y, 1, c]."""
    b, nx, ny, t, c = fields.shape
    frames = F.interpolate(
        fields.permute(0, 3, 4, 1, 2).reshape(b * t, c, nx, ny), size=(res, res), mode="bilinear", align_corners=False
    )
    x = frames.reshape(b, t, c, res, res).permute(0, 3, 4, 1, 2)
    x = torch.cat([x, torch.full((b, res, res, t, channels - c), pad)], dim=-1)
    with torch.no_grad():
        y = model(x).pred[..., :c]  # [B, R, R, 1, c]
    y = F.interpolate(
        y.permute(0, 3, 4, 1, 2).reshape(b, c, res, res), size=(nx, ny), mode="bilinear", align_corners=False
    )
    return y.reshape(b, c, nx, ny).permute(0, 2, 3, 1)[:, :, :, None]


def test_predictor_on_64_for_a_32_model_equals_resize_model_resize(model_dir: Path) -> None:
    model = load_model(model_dir)
    cfg = model.run_config
    fields = torch.randn(2, 64, 64, cfg.model.t_in, 2)
    out = Predictor(model).rollout(fields, steps=1)
    assert out.shape == (2, 64, 64, 1, 2)
    ref = _manual(model, fields, cfg.model.grid[0], cfg.model.channels, cfg.data.pad_value)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # numpy in, numpy out; one sample [X, Y, T, C]; three steps feed their own predictions back
    arr = fields[0].numpy()
    three = Predictor(model_dir).rollout(arr, steps=3)
    assert isinstance(three, np.ndarray) and three.shape == (64, 64, 3, 2)
    np.testing.assert_allclose(three[:, :, :1], ref[0].numpy(), rtol=1e-4, atol=1e-5)
    mask = np.ones((64, 64), dtype=np.float32)
    mask[:10] = 0
    masked = Predictor(model).rollout(arr, steps=1, mask=mask)
    assert (masked[:10] == 0).all() and np.allclose(masked[10:], three[10:, :, :1], atol=1e-5)


def test_predictor_names_what_is_wrong(model_dir: Path) -> None:
    predictor = Predictor(model_dir)
    t_in = predictor.cfg.model.t_in
    with pytest.raises(ValueError, match=f"needs t_in={t_in}"):
        predictor.rollout(np.zeros((16, 16, t_in - 1, 1), np.float32), steps=1)
    with pytest.raises(ValueError, match="model's 4"):
        predictor.rollout(np.zeros((16, 16, t_in, 5), np.float32), steps=1)
    with pytest.raises(ValueError, match=r"\[X, Y, T, C\]"):
        predictor.rollout(np.zeros((16, t_in, 1), np.float32), steps=1)


@pytest.mark.parametrize("suffix", [".npy", ".h5"])
def test_predict_command_writes_rollout_and_figure(model_dir: Path, tmp_path: Path, suffix: str) -> None:
    t_in = load_model(model_dir).run_config.model.t_in
    fields = np.random.default_rng(0).standard_normal((48, 48, t_in + 2, 3)).astype(np.float32)  # with a future
    source = tmp_path / f"fields{suffix}"
    if suffix == ".npy":
        np.save(source, fields)
    else:
        with h5py.File(source, "w") as f:
            f["velocity"] = fields
    out = tmp_path / "pred"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "nestor_ds",
            "predict",
            "--model",
            str(model_dir),
            "--input",
            str(source),
            "--steps",
            "4",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    pred = np.load(out / "prediction.npy") if suffix == ".npy" else h5py.File(out / "prediction.h5")["prediction"][()]
    assert pred.shape == (48, 48, 4, 3) and np.isfinite(pred).all()
    assert (out / "prediction.png").stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, "pred"])  # nothing else written


def test_channels_by_name_follow_a_training_data_set(model_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    named = tmp_path / "named"
    shutil.copytree(model_dir, named)
    (named / "channels.json").write_text(json.dumps({"alpha": ["u", "v", "p"], "beta": ["h"]}))
    predictor = Predictor(named)
    fields = np.random.default_rng(1).standard_normal((32, 32, predictor.cfg.model.t_in, 2)).astype(np.float32)
    by_name = predictor.rollout(fields, steps=1, channels=["v", "p"])
    np.testing.assert_array_equal(by_name, predictor.rollout(fields, steps=1, channels=[1, 2]))
    assert not np.allclose(by_name, predictor.rollout(fields, steps=1))  # positions 0, 1: another input
    with pytest.raises(ValueError, match=r"'alpha' has channels \['u', 'v', 'p'\], not \['w'\]"):
        predictor.rollout(fields, steps=1, channels=["v", "w"], dataset="alpha")
    with pytest.raises(ValueError, match="no training data sets match"):
        predictor.rollout(fields, steps=1, channels=["x", "y"])


def test_rollout_feeds_back_by_the_evaluators_rule(model_dir: Path) -> None:
    """Padded channels stay at the pad value and input-only ones (CFDBench's mask) come from the given frames."""
    model = load_model(model_dir)
    model.run_config = load_config(
        REPO / "configs" / "tiny_cpu.yaml",
        {"parallel.ep_size": 1, "data.datasets": [{"name": "cfdbench"}], "data.pad_value": 2.5},
    )
    t_in = model.run_config.model.t_in
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    fields = torch.randn(32, 32, t_in + 3, 3)
    fields[..., 2] = (torch.rand(32, 32) > 0.3).float()[:, :, None]  # a geometry mask, constant in time
    fields[:5, :5, -1, 2] = 7.0  # the given truth differs in the last frame: it must be what is fed back
    Predictor(model).rollout(fields, steps=3)
    assert len(seen) == 3
    for k, x in enumerate(seen):
        assert (x[..., 3] == 2.5).all()
        torch.testing.assert_close(x[0, :, :, :, 2], fields[:, :, k : k + t_in, 2])
    assert not torch.allclose(seen[-1][0, :, :, -1, 0], fields[:, :, t_in + 1, 0])  # u, v: the model's own
    # fewer frames than the rollout needs: the input-only channel holds its last given frame
    seen.clear()
    Predictor(model).rollout(fields[:, :, :t_in], steps=2)
    torch.testing.assert_close(seen[-1][0, :, :, -1, 2], fields[:, :, t_in - 1, 2])
