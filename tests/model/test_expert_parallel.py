"""Expert parallelism across real processes: ep_size=2 on 2 gloo ranks equals ep_size=1 on one.

Each case runs one optimizer step through deepspeed.initialize (ZeRO 0, 1, 2) and
compares outputs, loss, gradient norm and the parameters after the step (fp32, 1e-5).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from multiproc import REPO, torchrun

from nestor_ds.config import load_config
from nestor_ds.model import build_model
from nestor_ds.model.export import export_checkpoint, load_consolidated

WORKER = Path(__file__).with_name("ep_worker.py")
pytestmark = [pytest.mark.multiproc, pytest.mark.slow]
TOL = dict(rtol=1e-5, atol=1e-5)
BLOCKS = load_config(REPO / "configs" / "tiny_cpu.yaml").model.blocks


_DONE: set[Path] = set()


def _run(tmp: Path, ep: int, stage: int, *extra: str, stages: tuple[int, ...] | None = None) -> tuple[list[dict], dict]:
    """One optimizer step at ``ep`` and ZeRO ``stage``; ``stages``: run all of them in one launch (each in a fresh
    engine) and keep the others for later calls."""
    stages = stages or (stage,)
    out = tmp / (f"ep{ep}_zero{''.join(map(str, stages))}" + "".join(extra).replace("-", "_"))
    if out not in _DONE:
        zero = ",".join(map(str, stages))
        torchrun(WORKER, ep, "--ep-size", str(ep), "--zero-stages", zero, "--out", str(out), *extra)
        _DONE.add(out)
    folder = out / f"zero{stage}"
    ranks = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(ep)]
    return ranks, torch.load(folder / "state.pt")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ep")


@pytest.mark.parametrize("space", ["2d", "3d", "wide"])
@pytest.mark.parametrize("stage", [0, 1, 2])
def test_ep2_equals_ep1(tmp: Path, stage: int, space: str) -> None:
    # NESTOR-3D: 3-D tokens through the same nested MoE; wide: a 32 x 64 grid, 4 x 8 tokens
    extra = {"2d": (), "3d": ("--3d",), "wide": ("--wide",)}[space]
    (one,), state1 = _run(tmp, 1, stage, *extra, stages=(0, 1, 2))  # the three stages share one launch
    two, state2 = _run(tmp, 2, stage, *extra, stages=(0, 1, 2))
    assert one["pred"].shape[1:-2] == {"2d": (32, 32), "3d": (8, 8, 8), "wide": (32, 64)}[space]
    torch.testing.assert_close(torch.cat([r["pred"] for r in two]), one["pred"], **TOL)
    assert one["host_syncs"] == {}, one["host_syncs"]
    for r in two:
        for key in ("loss", "aux_image", "aux_token"):
            assert r[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), key
        norm_key = "grad_norm" if stage == 0 else "ds_grad_norm"  # ZeRO 1/2: DeepSpeed's own norm
        assert r[norm_key] == pytest.approx(one[norm_key], rel=1e-5)
        assert torch.equal(r["image_load"], one["image_load"])
        assert torch.equal(r["token_load"], one["token_load"])
        # dropless at ep 2: the host reads the exchanged route counts once per MoE layer, to size the variable
        # splits; nothing else in forward + backward (ep 1: nothing at all)
        assert r["host_syncs"] == {"tolist": BLOCKS}, r["host_syncs"]
    assert state1.keys() == state2.keys()
    for key in state1:
        torch.testing.assert_close(state2[key], state1[key], **TOL, msg=key)
    # each rank holds exactly half of the expert parameters
    assert [r["local_expert_params"] for r in two] == [one["local_expert_params"] // 2] * 2


def test_a_rank_whose_experts_receive_no_sample_still_trains(tmp: Path) -> None:
    """Dropless dispatch sends only real routes, so a rank may receive none: it still runs every exchange, forward
    and backward (else the others would wait for it forever), and the step equals ep 1's."""
    (one,), state1 = _run(tmp, 1, 0, "--rig-router")
    two, state2 = _run(tmp, 2, 0, "--rig-router")
    assert one["image_load"][:, 2:].sum() == 0  # experts 2 and 3 (rank 1's at ep 2) got nothing
    torch.testing.assert_close(torch.cat([r["pred"] for r in two]), one["pred"], **TOL)
    for r in two:
        assert r["loss"] == pytest.approx(one["loss"], rel=1e-5)
        assert r["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-5)
    for key in state1:
        torch.testing.assert_close(state2[key], state1[key], **TOL, msg=key)


def test_checkpoint_per_expert_files_reload_and_export(tmp: Path) -> None:
    ckpt = tmp / "ckpt"
    two, _ = _run(tmp, 2, 1, "--checkpoint", str(ckpt))
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml").model
    expert_files = sorted(p.name for p in (ckpt / "step1").glob("layer_*_expert_*_model_states.pt"))
    assert expert_files == sorted(
        f"layer_{layer}_expert_{e}_mp_rank_00_model_states.pt"
        for layer in range(cfg.blocks)
        for e in range(cfg.moe.experts)
    )
    for r in two:
        torch.testing.assert_close(r["eval_pred_after"], r["eval_pred_before"], rtol=0, atol=0)

    weights = export_checkpoint(ckpt, tmp / "consolidated.safetensors")
    single = build_model(
        cfg.model_copy(update={"moe": cfg.moe.model_copy(update={"drop_tokens": False})}), ep_size=1, seed=123
    )
    load_consolidated(single, weights)
    single.eval()
    from ep_worker import GLOBAL_BATCH, batch  # noqa: E402  (same data as the workers)

    x, _ = batch(load_config(REPO / "configs" / "tiny_cpu.yaml"))
    with torch.no_grad():
        pred = single(x[:GLOBAL_BATCH]).pred
    torch.testing.assert_close(pred, torch.cat([r["eval_pred_before"] for r in two]), **TOL)

    # the user's path: one folder, one call, no YAML; the 2-rank model's outputs in one process
    from nestor_ds import export_model, load_model

    folder = export_model(ckpt, tmp / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "export.json", "model.safetensors"]
    for source in (folder, ckpt):
        with torch.no_grad():
            pred = load_model(source)(x[:GLOBAL_BATCH]).pred
        torch.testing.assert_close(pred, torch.cat([r["eval_pred_before"] for r in two]), **TOL)


def test_imported_moepot_at_ep2_gives_the_ep1_outputs(tmp: Path) -> None:
    """A published MoE-POT checkpoint, imported once, runs with its experts sharded over 2 ranks."""
    import numpy as np

    from nestor_ds.model.published import import_checkpoint

    fixture = REPO / "tests" / "fixtures" / "reference" / "moepot_small"
    folder = tmp / "imported_moepot"
    import_checkpoint("moepot", fixture / "model.pth", folder)
    x = np.load(fixture / "input.npy")
    x = np.concatenate([x, x[:1]])  # 4 samples: 2 per rank
    np.save(tmp / "moepot_input.npy", x)
    preds = {}
    for ep in (1, 2):
        out = tmp / f"imported_ep{ep}"
        torchrun(
            WORKER,
            ep,
            "--ep-size",
            str(ep),
            "--imported",
            str(folder),
            "--input",
            str(tmp / "moepot_input.npy"),
            "--temperature",
            "2.0",
            "--out",
            str(out),
        )
        ranks = [torch.load(out / f"rank{r}.pt") for r in range(ep)]
        preds[ep] = torch.cat([r["pred"] for r in ranks])
        if ep == 2:
            assert [r["local_expert_params"] for r in ranks] == [
                8 * 2 * (64 * 64 + 64)
            ] * 2  # 8 of 16 experts x 2 blocks
    torch.testing.assert_close(preds[2], preds[1], **TOL)
    np.testing.assert_allclose(preds[2][:3].numpy(), np.load(fixture / "output.npy"), rtol=0, atol=1e-5)
