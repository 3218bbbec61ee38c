"""DPOT-3D and NESTOR-3D: the published constructor's state-dict layout maps onto ours key for key, a checkpoint
of that layout imports and runs, and the 3-D spectral filter keeps DPOT-3D's modes per axis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nestor_ds.config import ModelConfig
from nestor_ds.model import build_model
from nestor_ds.model.afno import AFNOFilter
from nestor_ds.model.published import import_checkpoint, infer_model_config, map_state

REPO = Path(__file__).resolve().parents[2]
TABLE = json.loads((REPO / "tests" / "fixtures" / "reference" / "dpot3d_constructor_shapes.json").read_text())


@pytest.mark.parametrize("name", sorted(TABLE))
def test_dpot3d_constructor_layout_maps_key_for_key(name: str) -> None:
    entry, kw = TABLE[name], TABLE[name]["kwargs"]
    state = {k: torch.empty(s, device="meta") for k, s in entry["state_dict"].items()}
    cfg = ModelConfig(**infer_model_config("dpot3d", state))
    assert cfg.variant == "dpot" and cfg.grid == [kw["img_size"]] * 3 and cfg.patch_size == kw["patch_size"]
    assert (cfg.width, cfg.blocks, cfg.afno_blocks, cfg.t_in, cfg.t_out, cfg.channels, cfg.normalize) == (
        kw["embed_dim"],
        kw["depth"],
        kw["n_blocks"],
        kw["in_timesteps"],
        kw["out_timesteps"],
        kw["in_channels"],
        "sample" if kw["normalize"] else "none",  # DPOT's flag is our per-sample rule
    )
    assert cfg.afno_modes_z == 8  # AFNO3D's temporal_modes default: DPOTNet3D's Block never sets it
    with torch.device("meta"):
        model = build_model(cfg, ep_size=1, ep_rank=0)
    mapped = map_state(state, model, name)  # raises on a left-over, missing or mismatched tensor
    assert set(mapped) == set(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == entry["params"]


def test_import_dpot3d_command_accepts_that_layout_and_the_model_runs(tmp_path: Path) -> None:
    entry = TABLE["small_normalized"]
    g = torch.Generator().manual_seed(0)
    state = {k: 0.05 * torch.randn(s, generator=g) for k, s in entry["state_dict"].items()}
    torch.save({"model": state}, tmp_path / "dpot3d.pth")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nestor_ds",
            "import",
            "dpot3d",
            str(tmp_path / "dpot3d.pth"),
            "--out",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "grid [32, 32, 32]" in done.stdout
    with pytest.raises(ValueError, match="holds a dpot3d model, not dpot"):
        import_checkpoint("dpot", tmp_path / "dpot3d.pth", tmp_path / "wrong")
    from nestor_ds.inference.model_io import load_model

    model = load_model(tmp_path / "m")
    x = torch.randn(2, 32, 32, 32, 4, 5)
    with torch.no_grad():
        pred = model(x).pred
    assert pred.shape == (2, 32, 32, 32, 2, 5) and torch.isfinite(pred).all()


def test_3d_filter_keeps_modes_per_axis_as_afno3d() -> None:
    """AFNO3D: rfftn over the three space axes, the block-diagonal complex MLP (GELU on real and imaginary parts)
    on [:modes, :modes, :temporal_modes], zero elsewhere, irfftn, plus the input."""
    torch.manual_seed(0)
    width, blocks, modes, modes_z = 8, 2, 3, 2
    f = AFNOFilter(width, blocks, (modes, modes, modes_z))
    x = torch.randn(2, width, 6, 6, 6)
    spec = torch.fft.rfftn(x.permute(0, 2, 3, 4, 1), dim=(1, 2, 3), norm="ortho")
    spec = spec.reshape(*spec.shape[:4], blocks, width // blocks)
    kept = spec[:, :modes, :modes, :modes_z]
    w1, b1, w2, b2 = f.w1.detach(), f.b1.detach(), f.w2.detach(), f.b2.detach()
    mm = lambda a, w: torch.einsum("...bi,bio->...bo", a, w)  # noqa: E731
    re1 = F.gelu(mm(kept.real, w1[0]) - mm(kept.imag, w1[1]) + b1[0])
    im1 = F.gelu(mm(kept.imag, w1[0]) + mm(kept.real, w1[1]) + b1[1])
    re2 = mm(re1, w2[0]) - mm(im1, w2[1]) + b2[0]
    im2 = mm(im1, w2[0]) + mm(re1, w2[1]) + b2[1]
    full = torch.zeros_like(spec)
    full[:, :modes, :modes, :modes_z] = torch.complex(re2, im2)
    y = torch.fft.irfftn(full.flatten(-2), s=(6, 6, 6), dim=(1, 2, 3), norm="ortho").permute(0, 4, 1, 2, 3) + x
    with torch.no_grad():
        torch.testing.assert_close(f(x), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["nestor", "dpot"])
def test_3d_models_from_the_grid_length(variant: str) -> None:
    cfg = ModelConfig(
        variant=variant, grid=[8, 8, 16], patch_size=4, width=32, heads=4, afno_blocks=4, channels=5, t_in=3, n_cls=2
    )
    model = build_model(cfg)
    assert model.encoder.pos_embed.shape == (1, 32, 2, 2, 4) and cfg.tokens == 16
    out = model(torch.randn(cfg.input_shape(2)))
    assert out.pred.shape == (2, 8, 8, 16, 1, 5) and out.extras["cls_logits"].shape == (2, 2)
    with pytest.raises(ValueError, match=r"input grid \[8, 8, 8\] differs from model.grid=\[8, 8, 16\]"):
        model(torch.randn(2, 8, 8, 8, 3, 5))
    with pytest.raises(ValueError, match="3-D model"):
        model(torch.randn(2, 8, 8, 3, 5))
    with pytest.raises(ValueError, match="MoE-POT has no 3-D form"):
        ModelConfig(variant="moepot", grid=[8, 8, 8], patch_size=4)
