"""The evaluator: baselines scored as the model is, and rollouts fed back by the one rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nestor_ds.config import load_config
from nestor_ds.data.loader import open_sources
from nestor_ds.data.trajectories import iter_split, to_common_grid
from nestor_ds.engine.evaluate import EvalResult, evaluate, format_table
from nestor_ds.model import build_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_shards(shared_shards) -> Path:
    return shared_shards(["ns2d_fno_1e-3", "cfdbench"], 4)


def _cfg(shards: Path, name: str, t_out: int = 1):
    return load_config(
        REPO / "configs" / "tiny_cpu.yaml",
        {
            "data.root": str(shards),
            "data.datasets": [{"name": name}],
            "parallel.ep_size": 1,
            "train.micro_batch_per_rank": 2,
            "data.pad_value": 1.5,
            "model.t_out": t_out,
        },
    )


def _run(cfg, seen: list[torch.Tensor] | None = None) -> EvalResult:
    model = build_model(cfg.model, seed=3).eval()

    def forward(x: torch.Tensor):
        if seen is not None:
            seen.append(x.clone())
        return model(x)

    return evaluate(forward, cfg, open_sources(cfg, "test"), 0, 1, torch.device("cpu"))


def test_persistence_equals_a_direct_numpy_computation(small_shards: Path) -> None:
    cfg = _cfg(small_shards, "ns2d_fno_1e-3")
    result = _run(cfg)
    src = open_sources(cfg, "test")[0]
    t_in, one, roll, lin = cfg.model.t_in, [], [], []
    for traj in iter_split(src):
        u = traj.data[: t_in + src.rollout, :, :, 0].astype(np.float64)  # [T, X, Y], native 32 = the model's grid
        one.append(np.mean([np.linalg.norm(u[s] - u[s - 1]) / np.linalg.norm(u[s]) for s in range(t_in, len(u))]))
        lin.append(
            np.mean(
                [np.linalg.norm(u[s] - (2 * u[s - 1] - u[s - 2])) / np.linalg.norm(u[s]) for s in range(t_in, len(u))]
            )
        )
        roll.append(np.linalg.norm(u[t_in:] - u[t_in - 1]) / np.linalg.norm(u[t_in:]))
    d = result.datasets[0]
    assert d.trajectories == len(one)
    assert d.persistence.one_step == pytest.approx(np.mean(one), rel=1e-5)
    assert d.linear.one_step == pytest.approx(np.mean(lin), rel=1e-5)
    assert d.persistence.rollout == pytest.approx(np.mean(roll), rel=1e-5)
    assert d.ratio_one_step == pytest.approx(d.one_step / d.persistence.one_step)
    assert d.persistence.curve.shape == d.rollout_curve.shape
    row = result.rows()[0]
    assert {
        "persistence_one_step",
        "linear_one_step",
        "ratio_one_step",
        "persistence_rollout",
        "linear_rollout",
        "ratio_rollout",
    } <= set(row)
    metrics = result.metrics()
    assert metrics["eval/ns2d_fno_1e-3/persistence_rollout"] == pytest.approx(d.persistence.rollout)
    assert metrics["eval/mean/ratio_rollout"] == pytest.approx(d.ratio_rollout)
    table = format_table(result)
    assert "persist." in table and "ratio" in table
    assert ("WORSE THAN PERSISTENCE" in table) == (not d.ratio_one_step < 1 or not d.ratio_rollout < 1)
    assert "NON-FINITE" not in table
    d.rollout = float("nan")  # a rollout that blew up is named, not left as a bare nan in the table
    assert "NON-FINITE predictions (nan: the rollout diverged) on: ns2d_fno_1e-3" in format_table(result)


def test_rollout_inputs_keep_padding_and_input_only_channels_from_the_truth(small_shards: Path) -> None:
    cfg = _cfg(small_shards, "cfdbench")  # u, v predicted; the geometry mask input only; the 4th channel padding
    seen: list[torch.Tensor] = []
    _run(cfg, seen)
    src = open_sources(cfg, "test")[0]
    truths = [to_common_grid(t, src, cfg.model.grid, cfg.model.channels, 1.5)[0] for t in iter_split(src)]
    masks = [t[:, :, 0, 2] for t in truths]  # the geometry mask: the same in every frame
    rollout_inputs = [x for x in seen if x.shape[0] == cfg.train.micro_batch_per_rank][1:]
    assert len(rollout_inputs) >= 3
    for x in rollout_inputs:
        assert (x[..., 3] == 1.5).all(), "a padded channel left its pad value"
        for sample in x:
            frames = sample[..., 2].permute(2, 0, 1)  # [t_in, X, Y]
            assert any(torch.equal(f, m) for m in masks for f in frames[-1:]), "input-only channel not the truth's"
    # the predicted channels do come from the model: the last rollout input is not a true frame
    last = rollout_inputs[-1][0, :, :, -1, 0]
    assert not any(torch.allclose(last, t[:, :, k, 0]) for t in truths for k in range(t.shape[2]))


def test_bundled_steps_score_frames_jointly_and_baselines_roll_out_alike(small_shards: Path) -> None:
    """Temporal bundling (t_out 2): one step scores both frames of a bundle together; a persistence or linear
    rollout is the same line whatever the bundle size."""
    one, two = (_run(_cfg(small_shards, "ns2d_fno_1e-3", t_out)).datasets[0] for t_out in (1, 2))
    src = open_sources(_cfg(small_shards, "ns2d_fno_1e-3", 2), "test")[0]
    t_in, ref = 4, []
    for traj in iter_split(src):
        u = traj.data[: t_in + src.rollout, :, :, 0].astype(np.float64)
        ref.append(
            np.mean(
                [
                    np.linalg.norm(u[s : s + 2] - u[s - 1]) / np.linalg.norm(u[s : s + 2])
                    for s in range(t_in, len(u) - 1)
                ]
            )
        )
    assert two.persistence.one_step == pytest.approx(np.mean(ref), rel=1e-5)
    assert two.persistence.rollout == pytest.approx(one.persistence.rollout, rel=1e-6)
    assert two.linear.rollout == pytest.approx(one.linear.rollout, rel=1e-5)
    assert two.rollout_curve.size == -(-one.rollout_curve.size // 2)


def test_a_square_set_in_a_wide_model_is_scored_on_its_own_points(small_shards: Path) -> None:
    """model.grid 32 x 64, data 32 x 32: the data fills its own 32 x 32 region (aspect kept, nothing resized), so
    persistence is exactly the native computation; the rollout's inputs stay padding outside the region, and the
    example shows the data's region only (the figure at the data's aspect)."""
    cfg = _cfg(small_shards, "ns2d_fno_1e-3").model_copy(deep=True)
    cfg.model.grid = [32, 64]
    seen: list[torch.Tensor] = []
    d = _run(cfg, seen).datasets[0]
    square = _run(_cfg(small_shards, "ns2d_fno_1e-3")).datasets[0]  # the same data on the square model grid
    assert d.persistence.one_step == pytest.approx(square.persistence.one_step, rel=1e-6)
    assert d.persistence.rollout == pytest.approx(square.persistence.rollout, rel=1e-6)
    assert all((x[:, :, 32:] == 1.5).all() for x in seen)  # every model input, one-step and fed back
    assert d.example is not None and d.example["input"].shape == (32, 32, 4)


def test_stats_normalisation_feeds_the_model_set_units_and_scores_in_the_datas(small_shards: Path) -> None:
    """model.normalize=stats: the model sees (x - mean) / std with the train split's manifest statistics and its
    prediction is scaled back, so a model that copies its last input frame scores exactly as persistence."""
    from nestor_ds.model.output import ModelOutput

    cfg = _cfg(small_shards, "ns2d_fno_1e-3").model_copy(deep=True)
    cfg.model.normalize = "stats"
    (src,) = open_sources(cfg, "test")
    train = open_sources(cfg, "train")[0].manifest
    assert src.stats == (train["mean"], train["std"]) != (src.manifest["mean"], src.manifest["std"])
    seen: list[torch.Tensor] = []

    def copy_last(x: torch.Tensor) -> ModelOutput:
        seen.append(x.clone())
        return ModelOutput(x[..., -1:, :], torch.zeros(()), torch.zeros(()))

    d = evaluate(copy_last, cfg, [src], 0, 1, torch.device("cpu")).datasets[0]
    assert d.one_step == pytest.approx(d.persistence.one_step, rel=1e-6)
    assert d.rollout == pytest.approx(d.persistence.rollout, rel=1e-6)
    first = seen[0][..., 0]  # the real channel, in set units
    raw, _ = to_common_grid(next(iter_split(src)), src, cfg.model.grid, cfg.model.channels, 1.5)
    expected = (raw[..., : cfg.model.t_in, 0] - train["mean"][0]) / train["std"][0]
    torch.testing.assert_close(first[0], expected, rtol=1e-5, atol=1e-5)
    assert (seen[0][..., 1:] == 1.5).all()  # padded channels: mean 0, std 1, still the pad value
