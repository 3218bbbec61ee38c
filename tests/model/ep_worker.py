"""One rank of the expert-parallel tests; started by torchrun from test_expert_parallel.py.

Runs one optimizer step of the tiny NESTOR through deepspeed.initialize and writes
what the test compares (outputs, loss, grad norms, consolidated weights) to --out.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist

from nestor_ds.config import build_deepspeed_config, load_config, read_ds_json
from nestor_ds.config.deepspeed_config import engine_clips_itself
from nestor_ds.engine.distributed import init_distributed, shutdown
from nestor_ds.engine.grad_norm import clip_global_grad_norm_, global_grad_norm
from nestor_ds.engine.losses import l2re
from nestor_ds.engine.optim import build_optimizer
from nestor_ds.model import build_model
from nestor_ds.model.export import gather_consolidated
from nestor_ds.profiling import count_host_syncs

REPO = Path(__file__).resolve().parents[2]
GLOBAL_BATCH = 8


def batch(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    m = cfg.model
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(m.input_shape(GLOBAL_BATCH), generator=g)
    y = torch.randn((GLOBAL_BATCH, *m.grid, m.t_out, m.channels), generator=g)
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ep-size", type=int, required=True)
    ap.add_argument("--zero-stages", default="0", help="comma-separated ZeRO stages, one step each, in this process")
    ap.add_argument("--variant", default="nestor")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, default=None, help="save a checkpoint after the step, reload it")
    ap.add_argument(
        "--imported",
        type=Path,
        default=None,
        help="instead: evaluate a folder written by 'nestor-ds import' on --input (forward only)",
    )
    ap.add_argument("--input", type=Path, default=None, help="with --imported: .npy input [B, X, Y, T_in, C]")
    ap.add_argument("--temperature", type=float, default=None, help="with --imported: router temperature")
    ap.add_argument("--rig-router", action="store_true", help="every sample picks experts 0 and 1 (rank 0's at ep 2)")
    ap.add_argument("--3d", dest="three_d", action="store_true", help="NESTOR-3D on an 8^3 grid (patch 4: 8 tokens)")
    ap.add_argument("--wide", action="store_true", help="a non-square 2-D grid, 32 x 64 (patch 8: 4 x 8 tokens)")
    args = ap.parse_args()

    init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.imported is not None:
        evaluate_imported(args, rank, world)
        shutdown()
        return
    cfg = load_config(
        REPO / "configs" / "tiny_cpu.yaml",
        {
            "parallel.ep_size": args.ep_size,
            "model.variant": args.variant,
            "model.moe.drop_tokens": False,
            "train.micro_batch_per_rank": GLOBAL_BATCH // world,
            "train.grad_clip": 0.05,  # clipping active
            **(
                {
                    "model.grid": [8, 8, 8],
                    "model.patch_size": 4,
                    "model.channels": 5,
                    "data.datasets": [{"name": "ns3d_pdb_M1_rand"}],
                }
                if args.three_d
                else {}
            ),
            **({"model.grid": [32, 64]} if args.wide else {}),
        },
    )
    for stage in (int(z) for z in args.zero_stages.split(",")):  # one process, one fresh engine per stage
        folder = args.out / f"zero{stage}"
        ds_json = read_ds_json(REPO / "ds_configs" / "cpu_fp32.json")
        ds_json["zero_optimization"] = {"stage": stage}
        ds = build_deepspeed_config(cfg, ds_json, world)
        model = build_model(cfg.model, args.ep_size, seed=cfg.train.seed)
        if (
            args.rig_router
        ):  # the other ranks' experts receive no sample: their rank must still take part in every exchange
            with torch.no_grad():
                for layer in model.moe_layers:
                    scorer = layer.deepspeed_moe.gate.scorer
                    scorer.weight.zero_()
                    scorer.bias.copy_(torch.tensor([8.0, 8.0] + [-8.0] * (scorer.bias.numel() - 2)))
        local_expert_params = sum(p.numel() for p in model.parameters() if getattr(p, "allreduce", True) is False)
        engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=build_optimizer(model, cfg.train.optimizer), config=ds
        )

        x, y = batch(cfg)
        per = GLOBAL_BATCH // world
        x, y = x[rank * per : (rank + 1) * per], y[rank * per : (rank + 1) * per]
        with count_host_syncs() as syncs:  # forward and backward through real all-to-alls: nothing read back
            out = engine(x)
            task = l2re(out.pred, y).mean()
            loss = task + cfg.train.aux_weight_image * out.aux_image + cfg.train.aux_weight_token * out.aux_token
            engine.backward(loss)
        our_norm = global_grad_norm(engine.module) if stage == 0 else torch.tensor(float("nan"))
        if engine_clips_itself(ds):
            clip_global_grad_norm_(engine.module, cfg.train.grad_clip)
        engine.step()
        ds_norm = engine.get_global_grad_norm()
        global_loss = loss.detach().clone()
        dist.all_reduce(global_loss)
        result = {
            "pred": out.pred.detach(),
            "loss": float(global_loss) / world,
            "aux_image": float(out.aux_image.detach()),
            "aux_token": float(out.aux_token.detach()),
            "grad_norm": float(our_norm),
            "ds_grad_norm": float(ds_norm) if ds_norm is not None else float("nan"),
            "local_expert_params": local_expert_params,
            "image_load": out.image_load,
            "token_load": out.token_load,
            "host_syncs": dict(syncs),
        }
        state = gather_consolidated(engine.module)

        if args.checkpoint is not None:
            engine.eval()
            with torch.no_grad():
                before = engine(x).pred
            engine.save_checkpoint(
                str(args.checkpoint),
                tag="step1",  # client state as the trainer writes it
                client_state={"step": 1, "config": cfg.model_dump(mode="json")},
            )
            model2 = build_model(cfg.model, args.ep_size, seed=999)  # different init: the load must overwrite it
            engine2, _, _, _ = deepspeed.initialize(
                model=model2, optimizer=build_optimizer(model2, cfg.train.optimizer), config=ds
            )
            engine2.load_checkpoint(str(args.checkpoint), tag="step1")
            engine2.eval()
            with torch.no_grad():
                after = engine2(x).pred
            result["eval_pred_before"], result["eval_pred_after"] = before, after

        folder.mkdir(parents=True, exist_ok=True)
        torch.save(result, folder / f"rank{rank}.pt")
        if rank == 0:
            torch.save(state, folder / "state.pt")
    shutdown()


def evaluate_imported(args: argparse.Namespace, rank: int, world: int) -> None:
    """Each rank predicts its share of the input with the imported weights at ``--ep-size``."""
    import numpy as np

    from nestor_ds.model.export import local_state_dict, read_weights

    x = torch.from_numpy(np.load(args.input))
    per = x.shape[0] // world
    cfg = load_config(
        args.imported / "config.yaml", {"parallel.ep_size": args.ep_size, "train.micro_batch_per_rank": per}
    )
    model = build_model(cfg.model, args.ep_size, seed=7)
    model.load_state_dict(local_state_dict(model, read_weights(args.imported)))
    ds = build_deepspeed_config(cfg, read_ds_json(REPO / "ds_configs" / "cpu_fp32.json"), world)
    engine, _, _, _ = deepspeed.initialize(model=model, config=ds)  # sets up the expert-parallel groups
    engine.eval()
    if args.temperature is not None:
        engine.module.set_temperature(args.temperature)
    with torch.no_grad():
        pred = engine(x[rank * per : (rank + 1) * per]).pred
    args.out.mkdir(parents=True, exist_ok=True)
    experts = sum(p.numel() for p in model.parameters() if getattr(p, "allreduce", True) is False)
    torch.save({"pred": pred, "local_expert_params": experts}, args.out / f"rank{rank}.pt")


if __name__ == "__main__":
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    main()
