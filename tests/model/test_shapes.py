"""Every variant maps [B, X, X, T_in, C] to [B, X, X, T_out, C] for several shapes."""

from __future__ import annotations

import pytest
import torch
from conftest import variant

from nestor_ds.model import build_model

SHAPES = [  # resolution, patch, channels, t_in, t_out
    (32, 8, 4, 4, 1),
    (16, 4, 1, 2, 3),
    (24, 8, 3, 5, 2),
    (64, 16, 2, 10, 1),
]


@pytest.mark.parametrize("kind", ["nestor", "dpot", "moepot"])
@pytest.mark.parametrize("res,patch,channels,t_in,t_out", SHAPES)
def test_output_shape(tiny_model_cfg, kind, res, patch, channels, t_in, t_out) -> None:
    cfg = variant(
        tiny_model_cfg, variant=kind, resolution=res, patch_size=patch, channels=channels, t_in=t_in, t_out=t_out
    )
    model = build_model(cfg)
    out = model(torch.randn(3, res, res, t_in, channels))
    assert out.pred.shape == (3, res, res, t_out, channels)
    assert torch.isfinite(out.pred).all()
    assert out.aux_image.dim() == 0 and out.aux_token.dim() == 0


@pytest.mark.parametrize(
    "ablation",
    [
        {"ablation__sub_moe": False},
        {"ablation__shared_afno": False},
        {"ablation__load_balancing": False},
        {"fusion": "gated"},
        {"fusion": "mean"},
    ],
)
def test_ablations_build_and_run(tiny_model_cfg, ablation) -> None:
    model = build_model(variant(tiny_model_cfg, **ablation))
    out = model(torch.randn(2, 32, 32, 4, 4))
    assert out.pred.shape == (2, 32, 32, 1, 4)
    if ablation.get("ablation__load_balancing") is False:
        assert out.aux_image.item() == 0 and out.aux_token.item() == 0 and not out.aux_image.requires_grad
    if ablation.get("ablation__sub_moe") is False:
        assert out.aux_token.item() == 0 and out.token_load.numel() == 0
    if ablation.get("ablation__shared_afno") is False:
        assert not any("afno" in n for n, _ in model.named_parameters())


def test_wrong_input_shape_is_named(tiny_model_cfg) -> None:
    model = build_model(tiny_model_cfg)
    with pytest.raises(ValueError, match=r"t_in=4, channels=4.*\(2, 32, 32, 3, 4\)"):
        model(torch.randn(2, 32, 32, 3, 4))


def test_same_seed_same_weights_different_seed_differs(tiny_model_cfg) -> None:
    a, b, c = (
        build_model(tiny_model_cfg, seed=0),
        build_model(tiny_model_cfg, seed=0),
        build_model(tiny_model_cfg, seed=1),
    )
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_attention_dropout_only_in_training(tiny_model_cfg) -> None:
    model = build_model(variant(tiny_model_cfg, attention_dropout=0.5))
    x = torch.randn(2, 32, 32, 4, 4)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x).pred, model(x).pred)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x).pred, model(x).pred)


@pytest.mark.parametrize("kind", ["nestor", "dpot"])
def test_backward_with_frozen_encoder(tiny_model_cfg, kind) -> None:
    """Regression: a frozen encoder hands the blocks a permuted tensor without grad; GroupNorm's CPU
    backward used to segfault on it."""
    from nestor_ds.engine.finetune import freeze

    model = build_model(variant(tiny_model_cfg, variant=kind))
    assert freeze(model, ["encoder"]) > 0
    out = model(torch.randn(2, 32, 32, 4, 4))
    out.pred.square().mean().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.head.out_layer[0].weight.grad is not None


@pytest.mark.parametrize("normalize", [False, True])
def test_residual_output_is_a_change_from_the_last_frame(tiny_model_cfg, normalize) -> None:
    """With the head's last layer zeroed a residual model predicts the last input frame (every t_out frame), an
    absolute one a constant (the normalised mean); a wider patch embedding changes only that layer's width."""
    cfg = variant(tiny_model_cfg, residual=True, normalize=normalize, t_out=2, embed_width=40)
    model = build_model(cfg)
    assert model.encoder.patch_embed.proj[0].out_channels == 40
    last = model.head.out_layer[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    x = torch.randn(cfg.input_shape(2))
    pred = model(x).pred
    torch.testing.assert_close(pred, x[:, :, :, -1:].expand_as(pred))
    absolute = build_model(variant(cfg, residual=False))
    absolute.load_state_dict(model.state_dict())
    assert not torch.allclose(absolute(x).pred, pred)


@pytest.mark.parametrize("kind", ["nestor", "dpot"])
def test_patches_and_afno_modes_per_axis_on_a_tall_grid(tiny_model_cfg, kind) -> None:
    """A 64 x 16 grid with 16 x 4 patches: a square 4 x 4 token grid; AFNO keeps 3 modes on x and 2 on y."""
    cfg = variant(tiny_model_cfg, variant=kind, grid=[64, 16], patch_size=[16, 4], afno_modes=[3, 2])
    assert cfg.latent == (4, 4) and cfg.patch == (16, 4)
    model = build_model(cfg)
    assert tuple(model.encoder.patch_embed.proj[0].kernel_size) == (16, 4)
    assert tuple(model.head.out_layer[0].kernel_size) == (16, 4)
    afno = [m for m in model.modules() if type(m).__name__ == "AFNOFilter"]
    assert afno and all(tuple(m.modes) == (3, 2) for m in afno)
    out = model(torch.randn(2, 64, 16, cfg.t_in, cfg.channels))
    assert out.pred.shape == (2, 64, 16, cfg.t_out, cfg.channels) and torch.isfinite(out.pred).all()


def test_per_axis_sizes_are_checked_by_name(tiny_model_cfg) -> None:
    with pytest.raises(ValueError, match=r"patch_size=\[8, 8, 8\]: one per axis of grid=\[32, 32\]"):
        variant(tiny_model_cfg, grid=[32, 32], patch_size=[8, 8, 8])
    with pytest.raises(ValueError, match=r"grid=\[32, 24\]: every size must be a positive multiple"):
        variant(tiny_model_cfg, grid=[32, 24], patch_size=[8, 16])
    with pytest.raises(ValueError, match=r"afno_modes=\[4, 0\] must be positive"):
        variant(tiny_model_cfg, grid=[32, 32], afno_modes=[4, 0])
