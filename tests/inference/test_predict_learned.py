"""A model trained for a minute, as a user would (the quick start's model, one rank, DPOT's unroll with
push-forward and patch jittering switched on), predicts a held-out trajectory at a grid it was not trained at:
better than persistence, and without a patch-grid artefact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SET = "ns2d_fno_1e-5"
PATCH_ENERGY_FACTOR = 3.0  # the prediction's energy at the patch frequency may exceed the truth's by at most this


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(model folder, shards) of a quick-start model trained on one generated set."""
    from suite_data import make_shards

    root = tmp_path_factory.mktemp("learned")
    shards = make_shards(root, [SET], trajectories=16)
    out = root / "run"
    cmd = [
        sys.executable,
        str(REPO / "launch" / "train.py"),
        "--ds_config",
        "ds_configs/cpu_fp32.json",
        "--config",
        "configs/quickstart.yaml",
        "--set",
        f"data.root={shards}",
        "--set",
        f"data.datasets=[{{name: {SET}}}]",
        "--set",
        f"train.output_dir={out}",
        "--set",
        "parallel.ep_size=1",
        "--set",
        "train.steps=150",
        "--set",
        "train.micro_batch_per_rank=8",
        "--set",
        "train.t_ar=2",
        "--set",
        "train.push_forward=true",
        "--set",
        "train.patch_jitter=true",
        "--set",
        "tracking.enabled=false",
        "--set",
        "train.log_every=50",
        "--set",
        "train.eval_trajectories=2",
    ]
    env = dict(os.environ, DS_ACCELERATOR="cpu", PYTHONPATH=str(REPO))  # one process: all cores for its threads
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "persist." in done.stdout  # the run's own table shows the baseline
    return out / "model", shards


def _l2re(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _patch_energy(field: np.ndarray, cycles: int) -> float:
    """Energy of a [X, Y] field at ``cycles`` per domain along either axis (the patch grid's frequency)."""
    power = np.abs(np.fft.fft2(field - field.mean())) ** 2
    return float(power[cycles, :].sum() + power[:, cycles].sum())


def test_prediction_at_48_beats_persistence_without_patch_artefacts(trained: tuple[Path, Path]) -> None:
    from nestor_ds import Predictor
    from nestor_ds.data.shards import decode_sample, iter_raw_samples, read_manifest

    model_dir, shards = trained
    predictor = Predictor(model_dir)
    m = predictor.cfg.model
    folder = shards / SET / "test"
    manifest = read_manifest(folder)
    traj = decode_sample(next(iter_raw_samples(str(folder / manifest["shards"][0]["name"]))), manifest["channels"])
    frames = torch.from_numpy(traj.data).permute(0, 3, 1, 2)  # [T, C, X, Y]
    fields = F.interpolate(frames, size=(48, 48), mode="bilinear", align_corners=False).permute(2, 3, 0, 1).numpy()
    pred = predictor.rollout(fields[:, :, : m.t_in], steps=1)[:, :, 0, 0]
    truth, last = fields[:, :, m.t_in, 0], fields[:, :, m.t_in - 1, 0]
    assert _l2re(pred, truth) < _l2re(last, truth), "the model does not beat copying the last frame"
    cycles = m.grid[0] // m.patch_size  # the patch grid of the model, in cycles per domain
    assert _patch_energy(pred, cycles) <= PATCH_ENERGY_FACTOR * _patch_energy(truth, cycles) + 1e-12
