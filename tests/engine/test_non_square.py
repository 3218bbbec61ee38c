"""A non-square pre-training end to end on 2 gloo ranks with ep_size 2: the Well stand-in (16 x 32, read from its
Well-format folders) mixed with a square set (32 x 32, kept square in its 16 x 16 corner), in each set's own
units (model.normalize=stats); killed and resumed to the same losses, evaluated beside persistence, predicted
at the data's aspect."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_killed_and_resumed, short_run

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
    return short_run(
        ("data.root", well),
        ("data.datasets", f"[{{name: {WELL}}}, {{name: {SQUARE}, shards: {square / SQUARE}}}]"),
        ("model.grid", "[16, 32]"),
        ("model.channels", 5),
        ("model.normalize", "stats"),
        ("train.output_dir", out),
    )


@pytest.mark.slow
@pytest.mark.multiproc
def test_wide_mixed_pretraining_resumes_exactly_evaluates_and_predicts(
    well_shards: Path, shards: Path, tmp_path: Path
) -> None:
    manifest = json.loads((well_shards / WELL / "train" / "manifest.json").read_text())
    assert manifest["shapes"][0][1:3] == [16, 32] and manifest["predicted_channels"] == 3
    straight, _ = run_killed_and_resumed(lambda out: _args(well_shards, shards, out), tmp_path)
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
    # 'nestor-ds predict --dataset': the rollout and its figure, input-only channels as they were given
    from nestor_ds.inference.files import predict_files

    fields = rng.standard_normal((16, 32, 6, 5)).astype(np.float32)
    np.save(tmp_path / "wide.npy", fields)
    written = predict_files(straight / "checkpoints", tmp_path / "wide.npy", tmp_path / "pred", 2, dataset=WELL)
    pred = np.load(written["prediction"])
    assert pred.shape == (16, 32, 2, 5) and written["figure"].stat().st_size > 10_000
    np.testing.assert_allclose(pred[..., 3:], fields[..., 4:6, 3:], rtol=1e-5, atol=1e-5)
