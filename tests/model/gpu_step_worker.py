"""One GPU rank: three bf16 training steps of the tiny NESTOR through DeepSpeed ZeRO-1 on NCCL."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import deepspeed
import torch

from nestor_ds.config import build_deepspeed_config, load_config
from nestor_ds.engine.distributed import init_distributed, shutdown
from nestor_ds.engine.losses import l2re
from nestor_ds.engine.optim import build_optimizer
from nestor_ds.model import build_model

REPO = Path(__file__).resolve().parents[2]


def main(out: Path) -> None:
    init_distributed()
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml", {"parallel.ep_size": 1, "model.resolution": 64})
    ds = build_deepspeed_config(cfg, REPO / "ds_configs" / "zero1_bf16.json", 1)
    model = build_model(cfg.model, 1)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=build_optimizer(model, cfg.train.optimizer), config=ds
    )
    m = cfg.model
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(4, 64, 64, m.t_in, m.channels, device="cuda", generator=g).bfloat16()
    y = torch.randn(4, 64, 64, m.t_out, m.channels, device="cuda", generator=g).bfloat16()
    losses = []
    for _ in range(3):
        o = engine(x)
        loss = l2re(o.pred, y).mean() + 0.03 * o.aux_image + 1e-4 * o.aux_token
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
    out.write_text(
        json.dumps({"losses": losses, "dtype": str(o.pred.dtype), "grad_norm": float(engine.get_global_grad_norm())})
    )
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
