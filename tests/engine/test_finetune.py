"""Fine-tuning starts from pre-trained weights even when the channel count changes, and freezes parts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nestor_ds.config import load_config
from nestor_ds.engine.finetune import freeze, load_pretrained
from nestor_ds.model import build_model
from nestor_ds.model.export import global_state_dict, save_consolidated

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml").model
    return save_consolidated(global_state_dict(build_model(cfg, seed=5)), tmp_path / "pre.safetensors")


def test_other_channel_count_keeps_everything_but_input_and_output_layers(weights: Path) -> None:
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml", {"model.channels": 2}).model
    model = build_model(cfg, seed=0)
    fresh = load_pretrained(model, weights)
    # DPOT's patch embedding is C * p + 3 wide, so both of its convs change shape with C
    assert fresh == [
        "encoder.patch_embed.proj.0.bias",
        "encoder.patch_embed.proj.0.weight",
        "encoder.patch_embed.proj.2.weight",
        "head.out_layer.4.bias",
        "head.out_layer.4.weight",
    ]
    source = build_model(load_config(REPO / "configs" / "tiny_cpu.yaml").model, seed=5).state_dict()
    mine = model.state_dict()
    shared = [k for k in mine if k not in fresh]
    assert shared and all(torch.equal(mine[k], source[k]) for k in shared)
    assert model(torch.randn(1, 32, 32, 4, 2)).pred.shape == (1, 32, 32, 1, 2)


def test_freeze_routers_and_encoder(weights: Path) -> None:
    model = build_model(load_config(REPO / "configs" / "tiny_cpu.yaml").model)
    frozen = freeze(model, ["routers"])
    routers = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen > 0 and routers and all(".gate.scorer." in n or ".router." in n for n in routers)
    freeze(model, ["encoder"])
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_weights_of_another_variant_load_only_what_fits(weights: Path) -> None:
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml", {"model.variant": "dpot"}).model
    fresh = load_pretrained(build_model(cfg), weights)
    assert any(k.startswith("blocks.") for k in fresh) and not any(k.startswith("encoder.") for k in fresh)


def test_changed_grid_and_t_in_follow_the_named_rules(weights: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 32 x 32, t_in 4 checkpoint fine-tuned at 32 x 64 with t_in 2: the position embedding resampled to the new
    latent grid, the time aggregation's last two frames kept (scaled by 4/2); both logged by rule name."""
    from nestor_ds.engine.finetune import Adaptation

    tiny = REPO / "configs" / "tiny_cpu.yaml"
    source = build_model(load_config(tiny).model, seed=5).state_dict()
    t_old = source["encoder.time_agg.w"].shape[0]
    cfg = load_config(tiny, {"model.grid": [32, 64], "model.t_in": 2}).model
    model = build_model(cfg, seed=0)
    with caplog.at_level("INFO"):
        fresh = load_pretrained(model, weights, adapt=Adaptation())
    assert fresh == []
    mine = model.state_dict()
    want = torch.nn.functional.interpolate(source["encoder.pos_embed"], size=tuple(cfg.latent), mode="bilinear")
    assert mine["encoder.pos_embed"].shape[2:] == (4, 8) and torch.equal(mine["encoder.pos_embed"], want)
    assert torch.equal(mine["encoder.time_agg.w"], source["encoder.time_agg.w"][-2:] * (t_old / 2))
    assert "pos_embed=interpolate" in caplog.text and f"time_agg=slice: t_in {t_old} -> 2" in caplog.text
    assert model(torch.randn(1, 32, 64, 2, 4)).pred.shape == (1, 32, 64, 1, 4)

    model = build_model(cfg, seed=0)
    fresh = load_pretrained(model, weights, adapt=Adaptation("fresh", "fresh"))
    assert fresh == ["encoder.pos_embed", "encoder.time_agg.w"]
    assert not load_pretrained(build_model(cfg, seed=0), weights) == []  # evaluation: no rule, they do not fit


def test_what_cannot_carry_over_is_refused_by_name(weights: Path) -> None:
    from nestor_ds.engine.finetune import Adaptation
    from nestor_ds.errors import CheckpointError

    tiny = REPO / "configs" / "tiny_cpu.yaml"
    longer = build_model(load_config(tiny, {"model.t_in": 12}).model)
    with pytest.raises(CheckpointError, match=r"t_in=\d+ frames, this model t_in=12.*adapt_time_agg: fresh"):
        load_pretrained(longer, weights, adapt=Adaptation())
    assert load_pretrained(longer, weights, adapt=Adaptation(time_agg="fresh")) == ["encoder.time_agg.w"]
    wider = build_model(load_config(tiny, {"model.width": 48}).model)
    with pytest.raises(CheckpointError, match=r"block tensors do not fit this model, e.g. blocks\."):
        load_pretrained(wider, weights, adapt=Adaptation())
