"""A non-square pre-training end to end on 2 gloo ranks with ep_size 2: the Well stand-in (16 x 32, read from its
Well-format folders) mixed with a square set (32 x 32, kept square in its 16 x 16 corner), in each set's own
units (model.normalize=stats); killed and resumed to the same losses, evaluated beside persistence, predicted
at the data's aspect."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import launch, launch_and_kill_after_checkpoint

from nestor_ds.data.convert import shard_dataset
from nestor_ds.data.generate import Size, generate_suite

WELL = "swe_basin_well"
SQUARE = "ns2d_fno_1e-3"


@pytest.fixture(scope="module")
def well_shards(tmp_path_factory) -> Path:
    """The Well stand-in, generated in the Well's folder layout and sharded by the Well reader."""
    root = tmp_path_factory.mktemp("well")
    (entry,) = generate_suite("well", root / "raw", Size(trajectories=10, resolution=16, frames=12), progress=False)
    shard_dataset(entry.name, entry.path, root / "shards", fmt=entry.format, per_shard=2, progress=False)
    return root / "shards"


def _args(well: Path, square: Path, out: Path) -> list[str]:
    sets = [
        ("data.root", well),
        ("data.datasets", f"[{{name: {WELL}}}, {{name: {SQUARE}, shards: {square / SQUARE}}}]"),
        ("model.grid", "[16, 32]"),
        ("model.channels", 5),
        ("model.normalize", "stats"),
        ("train.output_dir", out),
        ("train.steps", 8),
        ("train.checkpoint_every", 4),
        ("train.eval_every", 100),
        ("train.log_every", 1),
        ("train.micro_batch_per_rank", 2),
    ]
    flat = [a for key, value in sets for a in ("--set", f"{key}={value}")]
    return ["--ds_config", "ds_configs/cpu_fp32.json", "--config", "configs/tiny_cpu.yaml", *flat]


@pytest.mark.slow
@pytest.mark.multiproc
def test_wide_mixed_pretraining_resumes_exactly_evaluates_and_predicts(
    well_shards: Path, shards: Path, tmp_path: Path
) -> None:
    manifest = json.loads((well_shards / WELL / "train" / "manifest.json").read_text())
    assert manifest["shapes"][0][1:3] == [16, 32] and manifest["predicted_channels"] == 3
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    launch("torchrun", 2, _args(well_shards, shards, straight))
    launch_and_kill_after_checkpoint(2, _args(well_shards, shards, killed), killed)
    resumed_from = int((killed / "checkpoints" / "latest").read_text().strip().removeprefix("step"))
    launch("torchrun", 2, _args(well_shards, shards, killed))
    history = lambda out: {h["step"]: h["train/loss"] for h in json.loads((out / "eval" / "history.json").read_text())}  # noqa: E731
    a, b = history(straight), history(killed)
    assert sorted(b) == list(range(resumed_from + 1, 9))
    assert all(b[s] == a[s] for s in b), (a, b)
    # both sets evaluated beside persistence, computed the same way
    rows = {r["dataset"]: r for r in json.loads((straight / "eval" / "eval_table.json").read_text())["datasets"]}
    assert set(rows) == {WELL, SQUARE} and rows[WELL]["trajectories"] == 2
    for row in rows.values():
        assert np.isfinite([row["l2re_one_step"], row["persistence_one_step"], row["l2re_rollout"]]).all()
    assert (straight / "eval" / f"sample_{WELL}.png").stat().st_size > 10_000
    # predicted on the user's grid: a wide field in the Well set's units, a square one in its 16 x 16 corner
    from nestor_ds.inference import Predictor

    predictor = Predictor(straight / "checkpoints")
    rng = np.random.default_rng(0)
    wide = predictor.rollout(rng.standard_normal((16, 32, 4, 5)).astype(np.float32), steps=2, dataset=WELL)
    square = predictor.rollout(rng.standard_normal((24, 24, 4, 1)).astype(np.float32), steps=2, dataset=SQUARE)
    assert wide.shape == (16, 32, 2, 5) and square.shape == (24, 24, 2, 1)
    assert np.isfinite(wide).all() and np.isfinite(square).all()
    with pytest.raises(Exception, match="pass dataset="):
        predictor.rollout(rng.standard_normal((16, 32, 4, 5)).astype(np.float32), steps=1)
