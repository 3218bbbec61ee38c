"""GPU checks: bf16 forward/backward on the fused attention kernels, and a DeepSpeed bf16 step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, variant

from nestor_ds.model import build_model
from nestor_ds.model.attention import HAS_FLASH_ATTN

pytestmark = pytest.mark.gpu


def _bf16_step(cfg) -> None:
    model = build_model(cfg).cuda().bfloat16()
    x = torch.randn(cfg.input_shape(4), device="cuda", dtype=torch.bfloat16)
    out = model(x)
    assert out.pred.dtype == torch.bfloat16 and torch.isfinite(out.pred.float()).all()
    (out.pred.float().square().mean() + out.aux_image + out.aux_token).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g.float()).all() for g in grads)


def test_bf16_forward_backward_on_sdpa_flash_kernel(tiny_model_cfg) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cfg = variant(tiny_model_cfg, resolution=64, attention="sdpa")
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises if the fused flash kernel cannot run
        _bf16_step(cfg)


@pytest.mark.parametrize("variant_name", ["nestor", "dpot"])
def test_bf16_3d_forward_backward_and_memory(tiny_model_cfg, variant_name: str) -> None:
    """NESTOR-3D and DPOT-3D at 64^3 (patch 8: 512 tokens) in bf16: finite, and the peak memory printed."""
    cfg = variant(tiny_model_cfg, variant=variant_name, grid=[64, 64, 64], patch_size=8, channels=5, attention="sdpa")
    torch.cuda.reset_peak_memory_stats()
    _bf16_step(cfg)
    print(f"{variant_name}-3D 64^3 batch 4 bf16: peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


@pytest.mark.skipif(not HAS_FLASH_ATTN, reason="flash-attn package not installed")
def test_bf16_forward_backward_with_flash_attn_package(tiny_model_cfg) -> None:
    _bf16_step(variant(tiny_model_cfg, resolution=64, attention="flash"))


def test_sdpa_and_manual_attention_agree_in_bf16() -> None:
    from nestor_ds.model.attention import fused_attention

    q, k, v = (torch.randn(2, 4, 256, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ref = torch.softmax((q.float() @ k.float().transpose(-1, -2)) / 8.0, dim=-1) @ v.float()
    torch.testing.assert_close(fused_attention(q, k, v, 0.0, "auto").float(), ref, rtol=2e-2, atol=2e-2)


def test_deepspeed_bf16_zero1_steps_on_nccl(tmp_path: Path) -> None:
    out = tmp_path / "gpu_step.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("DS_ACCELERATOR", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "1",
            str(Path(__file__).with_name("gpu_step_worker.py")),
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    result = json.loads(out.read_text())
    assert result["dtype"] == "torch.bfloat16"
    assert all(loss == loss and loss < 10 for loss in result["losses"])
    assert result["grad_norm"] > 0


def _train_step(model: torch.nn.Module, x: torch.Tensor):
    out = model(x)
    (out.pred.float().square().mean() + out.aux_image + out.aux_token).backward()
    return out


def test_grouped_experts_on_cuda_bf16_match_the_loop_and_never_sync(tiny_model_cfg) -> None:
    """On a Hopper GPU in bf16 the experts run as F.grouped_mm: the loop's outputs, and no device read."""
    from nestor_ds.model.grouped import grouped_mm_applies
    from nestor_ds.profiling import count_host_syncs

    x = torch.randn(8, 32, 32, tiny_model_cfg.t_in, tiny_model_cfg.channels, device="cuda", dtype=torch.bfloat16)
    outs = {}
    for compute in ("grouped", "loop"):
        torch.manual_seed(0)
        model = build_model(variant(tiny_model_cfg, moe__expert_compute=compute)).cuda().bfloat16()
        _train_step(model, x)
        with count_host_syncs() as syncs:
            outs[compute] = _train_step(model, x)
        if compute == "grouped":
            assert sum(syncs.values()) == 0, dict(syncs)
    if torch.cuda.get_device_capability()[0] >= 9:
        assert grouped_mm_applies(x, torch.empty(2, 64, 64, device="cuda", dtype=torch.bfloat16))
    torch.testing.assert_close(outs["grouped"].pred.float(), outs["loop"].pred.float(), rtol=5e-2, atol=5e-2)
    assert torch.equal(outs["grouped"].image_load, outs["loop"].image_load)


def test_compiled_blocks_match_eager_on_cuda_bf16(tiny_model_cfg) -> None:
    x = torch.randn(4, 32, 32, tiny_model_cfg.t_in, tiny_model_cfg.channels, device="cuda", dtype=torch.bfloat16)
    preds = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(variant(tiny_model_cfg, compile=compiled)).cuda().bfloat16()
        preds.append(model(x).pred.float())
    torch.testing.assert_close(preds[1], preds[0], rtol=5e-2, atol=5e-2)
