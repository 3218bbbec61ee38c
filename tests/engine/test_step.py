"""Step maths: baselines, noise modes and patch jittering."""

from __future__ import annotations

from pathlib import Path

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


def test_stats_units_per_sample_set_and_an_unrolled_step_in_them() -> None:
    """Each sample in its own set's units (padded channels untouched, a constant channel floored), the prediction
    scaled back; in the unrolled step the model sees set units, the loss and the fed-back frames data units."""
    from nestor_ds.config import load_config
    from nestor_ds.data.set_stats import MIN_STD, SetStats
    from nestor_ds.engine.step import SetFacts, unrolled_step
    from nestor_ds.model.output import ModelOutput

    units = SetStats.of([([10.0, 0.0], [2.0, 0.0]), ([-1.0], [4.0])], channels=3)
    assert units.std[0].tolist() == pytest.approx([2.0, MIN_STD, 1.0]) and units.mean[1].tolist() == [-1.0, 0.0, 0.0]
    x = torch.randn(2, 4, 8, 3, 3)
    ids = torch.tensor([1, 0])
    scaled = units.to_model(x, ids)
    torch.testing.assert_close(scaled[0, ..., 0], (x[0, ..., 0] + 1.0) / 4.0)
    torch.testing.assert_close(scaled[1, ..., 0], (x[1, ..., 0] - 10.0) / 2.0)
    torch.testing.assert_close(scaled[..., 2], x[..., 2])  # padded
    torch.testing.assert_close(units.from_model(scaled, ids), x, rtol=1e-5, atol=1e-4)

    cfg = load_config(
        Path(__file__).resolve().parents[2] / "configs" / "tiny_cpu.yaml",
        {"model.t_in": 3, "model.channels": 3, "train.t_ar": 2},
    )
    facts = SetFacts(torch.zeros(2, 3, dtype=torch.int8), torch.tensor([False, False]), torch.ones(2, 3), units)
    seen = []

    def copy_last(window: torch.Tensor) -> ModelOutput:
        seen.append(window.clone())
        return ModelOutput(window[..., -1:, :], torch.zeros(()), torch.zeros(()))

    batch = {"x": x, "y": torch.randn(2, 4, 8, 2, 3), "mask": torch.ones(2, 4, 8, 1, 3), "dataset_id": ids}
    cfg.data.noise_scale = 0.0
    result = unrolled_step(copy_last, cfg, batch, facts, torch.Generator(), 0.0, torch.float32)
    torch.testing.assert_close(seen[0], scaled)
    torch.testing.assert_close(result.out.pred, x[..., -1:, :], rtol=1e-5, atol=1e-4)  # scaled back
    torch.testing.assert_close(seen[1][..., -1:, :], scaled[..., -1:, :], rtol=1e-5, atol=1e-4)  # fed back once


def test_a_jittered_sample_keeps_its_region_in_the_unrolled_feedback() -> None:
    """A sample filling the 8 x 16 corner of a 16 x 32 grid, shifted by patch jittering: the fed-back frame keeps the
    prediction on the shifted region and the pad value everywhere else (the region moves with the sample)."""
    from nestor_ds.config import load_config
    from nestor_ds.engine.step import SetFacts, unrolled_step
    from nestor_ds.model.output import ModelOutput

    cfg = load_config(
        Path(__file__).resolve().parents[2] / "configs" / "tiny_cpu.yaml",
        {"model.t_in": 2, "model.grid": [16, 32], "train.t_ar": 2, "train.patch_jitter": True},
    )
    b = 6
    c = cfg.model.channels
    x = torch.ones(b, 16, 32, 2, c)  # the pad value outside the region
    x[:, :8, :16] = 0.0
    y = x[..., :1, :].repeat(1, 1, 1, 2, 1)
    mask = torch.zeros(b, 16, 32, 1, c)
    mask[:, :8, :16] = 1
    batch = {"x": x, "y": y, "mask": mask, "dataset_id": torch.zeros(b, dtype=torch.long)}
    batch["extent"] = torch.tensor([[8, 16]] * b)
    facts = SetFacts(torch.zeros(1, c, dtype=torch.int8), torch.tensor([False]), torch.ones(1, c))
    seen = []

    def plus_five(window: torch.Tensor) -> ModelOutput:
        seen.append(window.clone())
        return ModelOutput(window[..., -1:, :] + 5.0, torch.zeros(()), torch.zeros(()))

    unrolled_step(plus_five, cfg, batch, facts, torch.Generator().manual_seed(1), 0.0, torch.float32)
    fed = seen[1][..., -1, 0]
    assert set(fed.unique().tolist()) == {1.0, 5.0}
    # the same shifts again (jitter draws first from the step's generator): where the sample's scored data went
    _, moved = jitter(torch.cat([x, y], dim=-2), mask, torch.tensor([False] * b), torch.Generator().manual_seed(1), 8)
    assert moved[:, 8:].any() or moved[:, :, 16:].any()  # some sample did move out of the unshifted corner
    assert torch.equal(fed == 5.0, moved[..., 0, 0] > 0)


def test_jitter_shifts_by_less_than_the_patch_on_each_axis() -> None:
    b, frames = 256, torch.arange(16 * 16, dtype=torch.float32).view(1, 16, 16, 1, 1).expand(256, 16, 16, 1, 1)
    periodic = torch.ones(b, dtype=torch.bool)
    moved, _ = jitter(frames.clone(), torch.ones(b, 16, 16, 1, 1), periodic, torch.Generator().manual_seed(0), (4, 2))
    first = moved[:, 0, 0, 0, 0].long()  # rolled: the value now at (0, 0) came from (-sx mod 16, -sy mod 16)
    sx, sy = (-(first // 16)) % 16, (-(first % 16)) % 16
    assert set(sx.tolist()) == {0, 1, 2, 3} and set(sy.tolist()) == {0, 1}
