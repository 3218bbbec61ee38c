"""3-D end to end: DPOT/NESTOR's 2-D -> 3-D initialisation rule, and a NESTOR-3D fine-tune from a 2-D model on
2 gloo ranks with ep_size 2 (killed, resumed to the same losses, evaluated beside persistence, predicted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_killed_and_resumed, short_run

from nestor_ds.config import ModelConfig, load_config
from nestor_ds.data.convert import shard_dataset
from nestor_ds.data.generate import Size, generate_suite
from nestor_ds.engine.finetune import load_pretrained
from nestor_ds.errors import CheckpointError
from nestor_ds.model import build_model
from nestor_ds.model.export import global_state_dict, save_consolidated

REPO = Path(__file__).resolve().parents[2]
TINY = load_config(REPO / "configs" / "tiny_cpu.yaml").model


def _model(dims: int, variant: str = "nestor", seed: int = 0, **update: object) -> torch.nn.Module:
    raw = TINY.model_dump() | {"variant": variant, "grid": [8] * dims, "patch_size": 4} | update
    return build_model(ModelConfig.model_validate(raw), seed=seed)


def _saved_2d(tmp_path: Path, variant: str, **update: object) -> tuple[Path, dict[str, torch.Tensor]]:
    state = global_state_dict(_model(2, variant, seed=1, **update))
    return save_consolidated(state, tmp_path / f"{variant}2d.safetensors"), state


@pytest.mark.parametrize("variant", ["dpot", "nestor"])
@pytest.mark.parametrize("rule", ["blocks", "blocks+time"])
def test_2d_to_3d_copies_what_the_published_rule_copies(tmp_path: Path, variant: str, rule: str) -> None:
    path, two = _saved_2d(tmp_path, variant)
    model = _model(3, variant)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = load_pretrained(model, path, rule)
    after = model.state_dict()
    carried = [k for k in after if k.startswith("blocks.") or (rule == "blocks+time" and ".time_agg." in k)]
    # the published rule: every tensor of every block (and the time aggregation when asked), 1x1 conv kernels
    # unsqueezed to 1x1x1; the patch and position embeddings, the head and the class head start fresh
    assert sorted(fresh) == sorted(set(after) - set(carried))
    assert any(k.startswith("encoder.patch_embed.") for k in fresh) and "encoder.pos_embed" in fresh
    assert any(k.startswith("head.") for k in fresh) and any(k.startswith("cls_head.") for k in fresh)
    inflated = []
    for k in carried:
        if after[k].shape == two[k].shape:
            assert torch.equal(after[k], two[k]), k
        else:
            assert after[k].shape == (*two[k].shape, 1) and torch.equal(after[k][..., 0], two[k]), k
            inflated.append(k)
    for k in fresh:
        assert torch.equal(after[k], before[k]), k
    if variant == "dpot":  # upstream unsqueezes the block tensors whose name has "mlp" and "weight"
        assert sorted(inflated) == sorted(k for k in carried if "mlp" in k and "weight" in k)
    else:  # NESTOR: the shared AFNO path's 1x1 kernels; gates, attention, Sub-MoE, norms, AFNO weights unchanged
        assert inflated and all(".afno." in k and ".mlp." in k for k in inflated)
        assert any(".deepspeed_experts." in k for k in carried) and any(".gate." in k for k in carried)


def test_2d_to_3d_refusals_name_what_differs(tmp_path: Path) -> None:
    wide, _ = _saved_2d(tmp_path, "nestor", width=128, heads=4)
    with pytest.raises(CheckpointError, match=r"blocks\.0\..* is \(.*128.*\) in the 2-D model"):
        load_pretrained(_model(3), wide, "blocks")
    more, _ = _saved_2d(tmp_path / "m", "nestor", moe={**TINY.moe.model_dump(), "experts": 2, "top_k": 1})
    with pytest.raises(CheckpointError, match="2 image-level experts per layer, this 3-D model 4"):
        load_pretrained(_model(3), more, "blocks")
    plain, _ = _saved_2d(tmp_path, "dpot")
    with pytest.raises(CheckpointError, match=r"holds a 2-D model .* is 3-D .*train.init_2d_to_3d"):
        load_pretrained(_model(3, "dpot"), plain)
    three = save_consolidated(global_state_dict(_model(3, "dpot")), tmp_path / "dpot3d.safetensors")
    with pytest.raises(
        CheckpointError, match=r"holds a 3-D model .* the config's model is 2-D \(model.grid=\[8, 8\]\)"
    ):
        load_pretrained(_model(2, "dpot"), three)


@pytest.fixture(scope="module")
def shards3d(tmp_path_factory) -> Path:
    """A small 3-D set from our 3-D solver in PDEBench's 3-D layout, sharded."""
    root = tmp_path_factory.mktemp("suite3d")
    (entry,) = generate_suite("small3d", root / "raw", Size(trajectories=8, resolution=8, frames=8), progress=False)
    shard_dataset(
        entry.name, entry.path, root / "shards", fmt=entry.format, per_shard=2, test=entry.test, progress=False
    )
    return root / "shards"


def _args(shards: Path, out: Path, init: Path, *extra: str) -> list[str]:
    return short_run(
        ("data.root", shards),
        ("data.datasets", "[{name: ns3d_pdb_M1_rand}]"),
        ("model.grid", "[8, 8, 8]"),
        ("model.patch_size", 4),
        ("model.channels", 5),
        ("train.output_dir", out),
        ("train.init_from", init),
        ("train.init_2d_to_3d", "blocks+time"),
        mode="finetune",
    )


@pytest.mark.slow
@pytest.mark.multiproc
def test_nestor3d_finetune_from_2d_resumes_exactly_evaluates_and_predicts(shards3d: Path, tmp_path: Path) -> None:
    init, _ = _saved_2d(tmp_path, "nestor")
    straight, log = run_killed_and_resumed(lambda out: _args(shards3d, out, init), tmp_path)
    assert "2-D -> 3-D (blocks+time)" in log
    # evaluated beside persistence, computed the same way
    (row,) = json.loads((straight / "eval" / "eval_table.json").read_text())["datasets"]
    assert row["dataset"] == "ns3d_pdb_M1_rand" and row["trajectories"] == 2
    assert np.isfinite([row["l2re_one_step"], row["persistence_one_step"], row["l2re_rollout"]]).all()
    # the exported model predicts on a 3-D grid of the user's (resized trilinearly and back)
    from nestor_ds.inference import Predictor

    predictor = Predictor(straight / "checkpoints")
    fields = np.random.default_rng(0).standard_normal((12, 12, 12, 4, 5)).astype(np.float32)
    out = predictor.rollout(fields, steps=2)
    assert out.shape == (12, 12, 12, 2, 5) and np.isfinite(out).all()
    # 'nestor-ds predict' on a 3-D .npy: the rollout beside a figure of the three orthogonal mid-planes
    from nestor_ds.inference.files import predict_files

    np.save(tmp_path / "fields.npy", fields)
    written = predict_files(straight / "checkpoints", tmp_path / "fields.npy", tmp_path / "pred", 3)
    assert np.load(written["prediction"]).shape == (12, 12, 12, 3, 5)
    assert written["figure"].stat().st_size > 10_000
