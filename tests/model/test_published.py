"""Our dpot and moepot compute what the published DPOTNet and MoEPOTNet compute, and their checkpoints import.

The fixtures (tests/fixtures/reference, copied from the team's shared/fixtures) were made by running the reference
code unchanged (see its README):
small models saved as the published checkpoints are, a fixed input, the reference output, and the
name -> shape tables of the published sizes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO

from nestor_ds.config import ModelConfig, load_config
from nestor_ds.model import build_model
from nestor_ds.model.params import param_report
from nestor_ds.model.published import (
    NESTOR_REFERENCE_TINY_PARAMS,
    PUBLISHED,
    import_checkpoint,
    infer_model_config,
    map_state,
)

FIXTURES = REPO / "tests" / "fixtures" / "reference"  # a copy of ../shared/fixtures, README inside


def _load_imported(folder: Path) -> torch.nn.Module:
    """The user's one call (nestor_ds.load_model): no YAML, every weight from the folder (strictly)."""
    from nestor_ds import load_model

    return load_model(folder)


@pytest.mark.parametrize("kind", ["dpot", "moepot"])
def test_imported_fixture_reproduces_the_reference_output(kind: str, tmp_path: Path) -> None:
    fixture = FIXTURES / f"{kind}_small"
    reference = json.loads((fixture / "config.json").read_text())
    result = import_checkpoint(kind, fixture / "model.pth", tmp_path)
    assert result.params == reference["params"]
    kwargs = reference["DPOTNet_kwargs" if kind == "dpot" else "MoEPOTNet_kwargs"]
    for ours, theirs in (
        ("width", "embed_dim"),
        ("blocks", "depth"),
        ("afno_blocks", "n_blocks"),
        ("patch_size", "patch_size"),
        ("t_in", "in_timesteps"),
        ("t_out", "out_timesteps"),
        ("channels", "in_channels"),
        ("mlp_ratio", "mlp_ratio"),
        ("decoder_width", "out_layer_dim"),
        ("normalize", "normalize"),
        ("n_cls", "n_cls"),
    ):
        assert result.model[ours] == kwargs[theirs], ours
    assert result.model["grid"] == [kwargs["img_size"]] * 2

    model = _load_imported(tmp_path)
    if kind == "moepot":
        model.set_temperature(reference["router_temperature"][0])  # the fixture's, a fresh MoEPOTNet's 2.0
    x = torch.from_numpy(np.load(fixture / "input.npy"))
    with torch.no_grad():
        out = model(x)
    np.testing.assert_allclose(out.pred.numpy(), np.load(fixture / "output.npy"), rtol=0, atol=1e-5)
    if kind == "dpot":
        np.testing.assert_allclose(out.extras["cls_logits"].numpy(), np.load(fixture / "cls.npy"), rtol=0, atol=1e-5)


def test_moepot_fixture_differs_at_another_temperature(tmp_path: Path) -> None:
    """The router temperature is part of the computation: the equivalence above is not vacuous."""
    import_checkpoint("moepot", FIXTURES / "moepot_small" / "model.pth", tmp_path)
    model = _load_imported(tmp_path)
    model.set_temperature(0.5)
    with torch.no_grad():
        pred = model(torch.from_numpy(np.load(FIXTURES / "moepot_small" / "input.npy"))).pred
    assert np.abs(pred.numpy() - np.load(FIXTURES / "moepot_small" / "output.npy")).max() > 1e-4


def _tables() -> list[tuple[str, str, dict]]:
    out = []
    for kind, file in (("dpot", "dpot_published_shapes.json"), ("moepot", "moepot_published_shapes.json")):
        if (FIXTURES / file).is_file():
            out += [(kind, size, entry) for size, entry in json.loads((FIXTURES / file).read_text()).items()]
    return out


@pytest.mark.parametrize("kind,size,entry", _tables(), ids=lambda v: v if isinstance(v, str) else "")
def test_published_shape_table_maps_completely(kind: str, size: str, entry: dict) -> None:
    state = {name: torch.empty(shape, device="meta") for name, shape in entry["state_dict"].items()}
    cfg = ModelConfig(**infer_model_config(kind, state))
    with torch.device("meta"):
        model = build_model(cfg, ep_size=1, ep_rank=0)
    mapped = map_state(state, model, f"{kind} {size}")  # raises on a left-over, missing or mismatched tensor
    assert set(mapped) == set(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == entry["params"]
    # the shipped config of that size is the same model
    shipped = load_config(REPO / "configs" / f"{kind}_{size.lower()}.yaml").model
    assert param_report(shipped).total == entry["params"] == PUBLISHED[kind][size]["params"]
    for key in ("width", "blocks", "afno_blocks", "mlp_ratio", "decoder_width"):
        assert getattr(shipped, key) == getattr(cfg, key), key


def test_nestor_tiny_differs_from_the_reference_only_by_the_attention_projection() -> None:
    """Our NESTOR Tiny is the reference's (83.1M) plus one D x D output projection per attention expert."""
    table = json.loads((FIXTURES / "nestor_reference_tiny_shapes.json").read_text())
    cfg = load_config(REPO / "configs" / "nestor_tiny.yaml").model
    r = param_report(cfg)
    experts = cfg.blocks * cfg.moe.experts
    assert table["params"] == NESTOR_REFERENCE_TINY_PARAMS
    assert r.total == NESTOR_REFERENCE_TINY_PARAMS + experts * (cfg.width * cfg.width + cfg.width)
    # the shared path: two stacked DPOT AFNO blocks, as many numbers as the reference's shared_afno
    reference_afno = sum(np.prod(s) for n, s in table["state_dict"].items() if ".shared_afno." in n)
    with torch.device("meta"):
        model = build_model(cfg, ep_rank=0)
    ours = sum(p.numel() for n, p in model.named_parameters() if ".afno." in n)
    assert ours == reference_afno == cfg.blocks * 2 * 791_552  # 1.58M per block, as the issue counts
    assert not cfg.moe.drop_tokens  # dropless, as the reference


def test_import_errors_name_the_problem(tmp_path: Path) -> None:
    good = torch.load(FIXTURES / "dpot_small" / "model.pth", weights_only=True)["model"]
    with pytest.raises(ValueError, match="holds a dpot model, not moepot"):
        import_checkpoint("moepot", FIXTURES / "dpot_small" / "model.pth", tmp_path / "a")
    with pytest.raises(ValueError, match=r"not dpot Ti: width 64 \(published 512\)"):
        import_checkpoint("dpot", FIXTURES / "dpot_small" / "model.pth", tmp_path / "b", size="Ti")
    extra = tmp_path / "extra.pth"
    torch.save({"model": {**good, "blocks.0.surprise": torch.zeros(3)}}, extra)
    with pytest.raises(ValueError, match=r"unknown \['blocks.0.surprise'\]"):
        import_checkpoint("dpot", extra, tmp_path / "c")
    diverged = tmp_path / "diverged.pth"
    torch.save(
        {"model": {**good, "blocks.1.filter.w2": torch.full_like(good["blocks.1.filter.w2"], float("nan"))}}, diverged
    )
    with pytest.raises(ValueError, match=r"non-finite values \(NaN/inf\) in \['blocks.1.filter.w2'\]"):
        import_checkpoint("dpot", diverged, tmp_path / "e")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((FIXTURES / "dpot_small" / "model.pth").read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated.pth: not a loadable PyTorch checkpoint"):
        import_checkpoint("dpot", truncated, tmp_path / "d")
    assert not any((tmp_path / d).exists() for d in "cde")  # nothing half-written


def test_trainer_style_checkpoints_import(tmp_path: Path) -> None:
    """What DPOT/MoE-POT trainers save ({'args', 'model', 'optimizer'}, DDP 'module.' names) imports too."""
    good = torch.load(FIXTURES / "dpot_small" / "model.pth", weights_only=True)["model"]
    saved = tmp_path / "trainer.pth"
    torch.save(
        {"args": argparse.Namespace(lr=1e-3), "model": {f"module.{k}": v for k, v in good.items()}, "optimizer": {}},
        saved,
    )
    assert import_checkpoint("dpot", saved, tmp_path / "out").params == 243827


def test_import_command(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "nestor_ds",
            "import",
            "moepot",
            str(FIXTURES / "moepot_small" / "model.pth"),
            "--out",
            str(tmp_path / "m"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "16 experts + 2 shared" in out.stdout and "409,123 parameters" in out.stdout
    assert "--mode finetune --weights" in out.stdout
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"model.safetensors", "config.yaml", "import.json"}
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "nestor_ds",
            "import",
            "dpot",
            str(tmp_path / "missing.pth"),
            "--out",
            str(tmp_path / "x"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "missing.pth does not exist" in bad.stderr


@pytest.mark.parametrize("config,figure", [("dpot_ti", "7.53 M"), ("dpot_h", "1031.08 M"), ("moepot_s", "166.34 M")])
def test_params_command_shows_the_published_count(config: str, figure: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nestor_ds", "params", "--config", f"configs/{config}.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    total, published = out.stdout.splitlines()[1], out.stdout.splitlines()[-1]
    assert total.startswith("total parameters") and figure in total
    assert published.startswith(f"published {config.split('_')[0]}") and figure in published
    assert published.endswith("(equal)")


def test_normalize_option_computes_dpots_normalisation(tmp_path: Path) -> None:
    """DPOT's ``normalize``: x -> (x - mu) / sigma with mu, sigma over X, Y, T (unbiased std + 1e-6),
    tokens rescaled by Linear(mu, sigma), the prediction mapped back with sigma and mu."""
    state = torch.load(FIXTURES / "dpot_small" / "model.pth", weights_only=True)["model"]
    width, channels = state["pos_embed"].shape[1], 4
    identity = {
        "scale_feats_mu.weight": torch.zeros(width, 2 * channels),
        "scale_feats_mu.bias": torch.zeros(width),
        "scale_feats_sigma.weight": torch.zeros(width, 2 * channels),
        "scale_feats_sigma.bias": torch.ones(width),
    }
    torch.save({"model": {**state, **identity}}, tmp_path / "normalized.pth")
    assert import_checkpoint("dpot", tmp_path / "normalized.pth", tmp_path / "n").model["normalize"] is True
    import_checkpoint("dpot", FIXTURES / "dpot_small" / "model.pth", tmp_path / "plain")
    normalized, plain = _load_imported(tmp_path / "n"), _load_imported(tmp_path / "plain")
    x = torch.from_numpy(np.load(FIXTURES / "dpot_small" / "input.npy")) * 3 + 1
    mu = x.double().mean(dim=(1, 2, 3), keepdim=True)
    sigma = x.double().std(dim=(1, 2, 3), keepdim=True) + 1e-6
    with torch.no_grad():
        expected = plain(((x - mu) / sigma).float()).pred.double() * sigma + mu
        torch.testing.assert_close(normalized(x).pred.double(), expected, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            normalized.encoder.scale_feats_mu.weight.normal_()  # the statistics now reach the tokens
        assert not torch.allclose(normalized(x).pred.double(), expected, atol=1e-3)
