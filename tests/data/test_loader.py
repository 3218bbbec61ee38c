"""The mixed window stream: proportions, disjoint slots, exact resume, shapes, masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from suite_data import train_batches

from nestor_ds.config import parse_config
from nestor_ds.data.feedback import Feedback, inside_region
from nestor_ds.data.loader import epoch_items, open_sources
from nestor_ds.data.shards import write_shards
from nestor_ds.data.trajectory import Trajectory


def make_set(
    root: Path,
    name: str,
    n: int,
    res: int | tuple[int, int],
    channels: int,
    frames: int = 8,
    per_shard: int = 2,
    mask: bool = False,
    split: str = "train",
) -> None:
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    nx, ny = (res, res) if isinstance(res, int) else res
    geometry = None
    if mask:
        geometry = np.ones((nx, ny), dtype=np.float32)
        geometry[: nx // 2, : ny // 4] = 0
    trajs = (
        Trajectory(
            name,
            i,
            rng.standard_normal((frames, nx, ny, channels)).astype(np.float32),
            [f"c{k}" for k in range(channels)],
            0.1,
            1 / nx,
            1 / ny,
            mask=geometry,
        )
        for i in range(n)
    )
    write_shards(trajs, root / name, name, split, per_shard=per_shard)


def _grid(res: int | tuple[int, int]) -> list[int]:
    return [res, res] if isinstance(res, int) else list(res)


def run_config(
    root: Path,
    sets: dict[str, tuple[int | tuple[int, int], int, float]],
    *,
    workers: int = 0,
    batch: int = 4,
    resolution: int | tuple[int, int] = 16,
    channels: int = 4,
    **data,
) -> object:
    custom = {
        name: {"format": "shards", "grid": _grid(res), "channels": c, "frames": 8, "train": 1, "test": 1, "weight": w}
        for name, (res, c, w) in sets.items()
    }
    raw = {
        "model": {
            "grid": _grid(resolution),
            "patch_size": 4,
            "width": 16,
            "heads": 2,
            "afno_blocks": 2,
            "t_in": 3,
            "t_out": 1,
            "channels": channels,
        },
        "data": {
            "root": str(root),
            "datasets": [{"name": n} for n in sets],
            "custom": custom,
            "workers": workers,
            **data,
        },
        "train": {"steps": 10, "micro_batch_per_rank": batch, "seed": 3},
    }
    return parse_config(raw)


@pytest.fixture
def two_sets(tmp_path: Path) -> Path:
    make_set(tmp_path, "alpha", 16, 16, 1)
    make_set(tmp_path, "beta", 16, 8, 2, mask=True)
    return tmp_path


def take(loader, n: int) -> list[dict]:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            return out
    raise AssertionError("loader ended")


def test_mixing_follows_weights(two_sets: Path) -> None:
    cfg = run_config(two_sets, {"alpha": (16, 1, 1.0), "beta": (8, 2, 3.0)}, batch=16)
    ids = torch.cat([b["dataset_id"] for b in take(train_batches(cfg, 0, 1), 100)])
    share = (ids == 1).float().mean().item()
    assert abs(share - 0.75) < 0.035, share  # 3 sigma of a binomial over 1600 draws


def test_ranks_and_workers_see_disjoint_data_within_an_epoch(tmp_path: Path) -> None:
    make_set(tmp_path, "alpha", 16, 8, 1, per_shard=2)  # 8 shards for 2 ranks x 2 workers
    cfg = run_config(tmp_path, {"alpha": (8, 1, 1.0)}, workers=2, batch=2, resolution=8, windows_per_trajectory=1)
    seen = []
    for rank in range(2):
        batches = take(train_batches(cfg, rank, 2), 4)  # 2 per worker: one epoch of its 2 shards
        seen.append(torch.cat([b["traj_index"] for b in batches]).tolist())
    assert len(set(seen[0]) & set(seen[1])) == 0
    assert sorted(seen[0] + seen[1]) == list(range(16))
    # the same holds when shards are fewer than slots (samples are dealt instead)
    src = open_sources(run_config(tmp_path, {"alpha": (8, 1, 1.0)}), "train")[0]
    dealt = [epoch_items(src, 0, 0, slot, 32) for slot in range(32)]
    flat = [i for d in dealt for i in d]
    assert len(flat) == len(set(flat)) == 16


@pytest.mark.parametrize("workers,start,per_traj", [(2, 5, 3), (2, 4, 1), (0, 3, 3), (0, 2, 4)])
def test_restart_at_step_n_repeats_the_same_batches(two_sets: Path, workers: int, start: int, per_traj: int) -> None:
    """Also mid-trajectory: with several windows per decoded trajectory a restart may land inside one."""
    cfg = run_config(
        two_sets,
        {"alpha": (16, 1, 1.0), "beta": (8, 2, 1.0)},
        workers=workers,
        batch=3,
        windows_per_trajectory=per_traj,
    )
    straight = take(train_batches(cfg, 1, 2), 9)
    resumed = take(train_batches(cfg, 1, 2, start_batch=start), 9 - start)
    for a, b in zip(straight[start:], resumed):
        for key in ("x", "y", "mask", "dataset_id", "traj_index"):
            assert torch.equal(a[key], b[key]), key
    other_rank = take(train_batches(cfg, 0, 2), 1)[0]
    assert not torch.equal(other_rank["x"], straight[0]["x"])


def test_each_decoded_trajectory_serves_k_windows_of_its_data_set(two_sets: Path) -> None:
    cfg = run_config(two_sets, {"alpha": (16, 1, 1.0), "beta": (8, 2, 1.0)}, batch=4, windows_per_trajectory=3)
    batches = take(train_batches(cfg, 0, 1), 12)
    ids = torch.cat([b["dataset_id"] for b in batches]).tolist()
    trajs = torch.cat([b["traj_index"] for b in batches]).tolist()
    xs = torch.cat([b["x"] for b in batches])
    for d in (0, 1):
        picks = [i for i, dd in enumerate(ids) if dd == d]
        runs = [[trajs[i] for i in picks[j : j + 3]] for j in range(0, len(picks) - 2, 3)]
        assert runs and all(len(set(r)) == 1 for r in runs), runs  # 3 consecutive picks, one trajectory
        assert len({r[0] for r in runs}) == len(runs)  # then the next trajectory
        starts = [[xs[i] for i in picks[j : j + 3]] for j in range(0, len(picks) - 2, 3)]
        assert any(not torch.equal(w[0], w[1]) or not torch.equal(w[1], w[2]) for w in starts)  # own starts


def test_every_rank_gets_identical_shapes(two_sets: Path) -> None:
    cfg = run_config(two_sets, {"alpha": (16, 1, 1.0), "beta": (8, 2, 1.0)}, batch=5, resolution=16, channels=4)
    for rank in range(2):
        for b in take(train_batches(cfg, rank, 2), 3):
            assert b["x"].shape == (5, 16, 16, 3, 4) and b["y"].shape == (5, 16, 16, 1, 4)
            assert b["mask"].shape == (5, 16, 16, 1, 4) and b["dataset_id"].shape == (5,)


def test_masks_after_resize_and_padding(two_sets: Path) -> None:
    cfg = run_config(two_sets, {"beta": (8, 2, 1.0)}, batch=2, resolution=16, channels=4)
    b = take(train_batches(cfg, 0, 1), 1)[0]
    mask = b["mask"][0, :, :, 0]
    assert torch.equal(mask[:, :, 2:], torch.zeros(16, 16, 2))  # padded channels are not real
    geometry = torch.ones(16, 16)
    geometry[:8, :4] = 0  # the 8x8 obstacle block [0:4, 0:2], upsampled x2 (nearest)
    assert torch.equal(mask[:, :, 0], geometry) and torch.equal(mask[:, :, 1], geometry)
    assert torch.equal(b["x"][..., 2:], torch.ones_like(b["x"][..., 2:]))  # DPOT pads with ones
    assert b["x"][..., :2].abs().sum() > 0


def test_mixing_is_proportional_to_size_times_weight_as_dpot(tmp_path: Path) -> None:
    make_set(tmp_path, "big", 16, 8, 1)
    make_set(tmp_path, "small", 4, 8, 1)
    sets = {"big": (8, 1, 1.0), "small": (8, 1, 1.0)}
    for mixing, want in (("size_weighted", 0.8), ("weight", 0.5)):
        cfg = run_config(tmp_path, sets, batch=16, resolution=8, mixing=mixing)
        ids = torch.cat([b["dataset_id"] for b in take(train_batches(cfg, 0, 1), 100)])
        assert abs((ids == 0).float().mean().item() - want) < 0.04, mixing


def test_dpot_subset_uses_the_first_n_trajectories(tmp_path: Path) -> None:
    make_set(tmp_path, "alpha", 12, 8, 1, per_shard=5)
    cfg = run_config(tmp_path, {"alpha": (8, 1, 1.0)}, batch=4, resolution=8, windows_per_trajectory=1)
    cfg.data.custom["alpha"] = cfg.data.custom["alpha"].model_copy(update={"dpot_train": 7})
    seen = torch.cat([b["traj_index"] for b in take(train_batches(cfg, 0, 1), 20)]).tolist()
    assert set(seen) == set(range(7))  # trajectories 7.. exist in the shards but DPOT never trains on them
    cfg.data.subset = "all"
    seen = torch.cat([b["traj_index"] for b in take(train_batches(cfg, 0, 1), 20)]).tolist()
    assert set(seen) == set(range(12))


def test_dpot_evaluation_mask_keeps_original_points_and_predicted_channels() -> None:
    from nestor_ds.data.loader import common_grid

    frames = np.random.default_rng(0).standard_normal((5, 8, 8, 3)).astype(np.float32)
    full, mask = common_grid(frames, None, (16, 16), 4, pad_value=1.0, scored=2, points="original")
    assert torch.equal(full[..., 3], torch.ones(16, 16, 5))  # the fourth channel is padding: ones
    want = torch.zeros(16, 16)
    want[::2, ::2] = 1  # DPOT's get_target_mask: every (16 // 8)-th point
    assert torch.equal(mask[:, :, 0, 0], want) and torch.equal(mask[:, :, 0, 1], want)
    assert mask[..., 2:].sum() == 0  # the input-only third channel (CFDBench's mask) is not scored
    _, dense = common_grid(frames, None, (16, 16), 4, points="all")
    assert dense[..., :3].all() and dense[..., 3].sum() == 0


def test_denoising_noise_is_scaled_by_the_l2_norm_per_channel() -> None:
    from nestor_ds.engine.step import add_noise

    x = torch.ones(2, 32, 32, 10, 2)
    x[..., 1] *= 100  # a channel 100x larger gets 100x the noise
    gen = torch.Generator().manual_seed(0)
    noisy = add_noise(x, torch.ones(2, 32, 32, 1, 2), 5e-4, gen, "l2")
    std = (noisy - x).flatten(1, 3).std(dim=1)  # [B, C]
    norm = (32 * 32 * 10) ** 0.5  # ||1|| over X, Y, T
    torch.testing.assert_close(std[:, 0], torch.full((2,), 5e-4 * norm), rtol=0.05, atol=0)
    torch.testing.assert_close(std[:, 1], torch.full((2,), 5e-4 * norm * 100), rtol=0.05, atol=0)
    rms = add_noise(x, torch.ones(2, 32, 32, 1, 2), 5e-4, torch.Generator().manual_seed(0), "rms") - x
    assert rms[..., 1].std() < std[:, 1].min() / 100  # the old RMS scaling: over 100x weaker here


def test_shards_behind_a_pipe_command_give_the_same_batches(two_sets: Path) -> None:
    sets = {"alpha": (16, 1, 1.0), "beta": (8, 2, 1.0)}
    local = take(train_batches(run_config(two_sets, sets, batch=3), 0, 1), 4)
    piped_cfg = run_config(two_sets, sets, batch=3)
    piped_cfg.data.root = f"pipe:cat {two_sets}/{{path}}"
    piped = take(train_batches(piped_cfg, 0, 1), 4)
    for a, b in zip(local, piped):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["traj_index"], b["traj_index"])
    cfg = run_config(two_sets, sets)
    cfg.data.root = "pipe:cat /nowhere/manifest.json"
    with pytest.raises(Exception, match=r"\{path\} placeholder"):
        open_sources(cfg, "train")


def test_square_and_non_square_sets_share_a_batch_each_at_its_own_aspect(tmp_path: Path) -> None:
    """A 16 x 16 set and an 8 x 16 set in a 16 x 32 model: the square one fills the 16 x 16 corner, the other the
    whole grid (resized x2, aspect kept); outside a sample's region: padding, unscored, reported as its extent,
    and kept padding by the feedback rule."""
    make_set(tmp_path, "square", 8, 16, 2)
    make_set(tmp_path, "wide", 8, (8, 16), 2)
    cfg = run_config(tmp_path, {"square": (16, 2, 1.0), "wide": ((8, 16), 2, 1.0)}, batch=8, resolution=(16, 32))
    (batch,) = take(train_batches(cfg, 0, 1), 1)
    ids, x, mask, extent = batch["dataset_id"], batch["x"], batch["mask"], batch["extent"]
    assert x.shape == (8, 16, 32, 3, 4) and {0, 1} <= set(ids.tolist())
    for i, d in enumerate(ids.tolist()):
        if d == 0:  # square: its own 16 x 16 values in the corner, the rest the pad value and unscored
            assert extent[i].tolist() == [16, 16]
            assert (x[i, :, 16:] == cfg.data.pad_value).all() and mask[i, :, 16:].sum() == 0
            assert mask[i, :, :16, :, :2].all() and not mask[i, ..., 2:].any()
        else:
            assert extent[i].tolist() == [16, 32] and mask[i, ..., :2].all()
    stretched = run_config(
        tmp_path, {"square": (16, 2, 1.0), "wide": ((8, 16), 2, 1.0)}, batch=8, resolution=(16, 32), resize="stretch"
    )
    (other,) = take(train_batches(stretched, 0, 1), 1)
    assert (other["extent"] == torch.tensor([16, 32])).all() and other["mask"][..., :2].all()

    roles = torch.zeros(8, 4, dtype=torch.int8)  # every channel predicted: only the region decides
    pred = torch.randn(8, 16, 32, 1, 4)
    fed = Feedback(roles, 1.0, inside_region(extent, (16, 32))).frames(pred, None, x)
    square = ids == 0
    assert (fed[square][:, :, 16:] == 1.0).all() and torch.equal(fed[square][:, :, :16], pred[square][:, :, :16])
    assert torch.equal(fed[~square], pred[~square])
