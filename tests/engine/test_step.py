"""Step maths: baselines, noise modes and patch jittering."""

from __future__ import annotations

import pytest
import torch

from nestor_ds.engine.baselines import linear_extrapolation, persistence
from nestor_ds.engine.step import add_noise, jitter


def test_baselines_extrapolate_the_last_frames() -> None:
    w = torch.arange(3.0).view(1, 1, 1, 3, 1).expand(1, 2, 2, 3, 1)  # frames 0, 1, 2
    assert persistence(w, 2)[0, 0, 0, :, 0].tolist() == [2.0, 2.0]
    assert linear_extrapolation(w, 2)[0, 0, 0, :, 0].tolist() == [3.0, 4.0]
    with pytest.raises(ValueError, match="at least 2 input frames"):
        linear_extrapolation(w[:, :, :, :1], 1)


def test_channel_and_set_noise_scale_per_channel_and_spare_unscored_ones() -> None:
    x = torch.ones(2, 16, 16, 3, 2)
    x[..., 1] *= 100.0
    mask = torch.ones(2, 16, 16, 1, 2)
    mask[1, ..., 1] = 0  # sample 1's second channel is not scored (input only or padding)
    gen = torch.Generator().manual_seed(0)
    noise = add_noise(x, mask, 0.1, gen, "channel_rms") - x
    assert noise[0, ..., 0].std() == pytest.approx(0.1, rel=0.1)
    assert noise[0, ..., 1].std() == pytest.approx(10.0, rel=0.1)
    assert (noise[1, ..., 1] == 0).all()
    std = torch.tensor([[2.0, 0.5], [2.0, 0.5]])
    by_set = add_noise(x, mask, 0.1, torch.Generator().manual_seed(0), "set_std", std) - x
    assert by_set[0, ..., 0].std() == pytest.approx(0.2, rel=0.1)
    assert by_set[0, ..., 1].std() == pytest.approx(0.05, rel=0.1)


def test_jitter_rolls_periodic_sets_and_pads_the_others() -> None:
    b, n = 64, 8
    frames = torch.arange(n * n, dtype=torch.float32).view(1, n, n, 1, 1).expand(b, n, n, 2, 1).clone()
    mask = torch.ones(b, n, n, 1, 1)
    periodic = torch.tensor([True, False] * (b // 2))
    moved, kept = jitter(frames, mask, periodic, torch.Generator().manual_seed(1), patch=4)
    shifts = set()
    for i in range(b):
        # the shift that maps the original onto this sample (rows and columns)
        sx = int((moved[i, :, :, 0, 0] == frames[0, 0, 0, 0, 0]).nonzero()[0, 0]) if periodic[i] else None
        if periodic[i]:
            sy = int((moved[i, :, :, 0, 0] == frames[0, 0, 0, 0, 0]).nonzero()[0, 1])
            torch.testing.assert_close(moved[i], torch.roll(frames[i], (sx, sy), (0, 1)))
            assert kept[i].all()
            shifts.add((sx, sy))
        else:
            k = kept[i, :, :, 0, 0]
            sx, sy = int((k.sum(1) == 0).sum()), int((k.sum(0) == 0).sum())  # empty rows, empty columns
            torch.testing.assert_close(moved[i, sx:, sy:], frames[i, : n - sx, : n - sy])  # shifted, edge-padded
            assert kept[i, sx:, sy:].all() and (kept[i, :sx].sum() == 0)
    assert len(shifts) > 4 and all(0 <= s < 4 for pair in shifts for s in pair)
