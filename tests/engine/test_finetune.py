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
