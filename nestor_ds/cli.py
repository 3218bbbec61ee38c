"""The ``nestor-ds`` command. Heavy imports (torch, deepspeed) stay inside the commands."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from nestor_ds.config import ConfigError, build_deepspeed_config, load_config


def _cmd_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.ds_config:
        ds = build_deepspeed_config(cfg, args.ds_config, args.world_size)
        print(json.dumps(ds, indent=2))
    else:
        print(cfg.model_dump_json(indent=2))
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    from nestor_ds.model.params import format_param_report, param_report

    cfg = load_config(args.config)
    ep = args.ep_size or cfg.parallel.ep_size
    print(format_param_report(param_report(cfg.model, ep), cfg.model, ep))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nestor-ds", description="NESTOR nested-MoE neural operators on DeepSpeed."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("config", help="validate a run config; with --ds-config print the derived DeepSpeed config")
    p.add_argument("--config", required=True, help="run config YAML")
    p.add_argument("--ds-config", help="DeepSpeed JSON from ds_configs/")
    p.add_argument("--world-size", type=int, default=1, help="number of ranks the run will use")
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("params", help="count total, active-per-sample and per-rank parameters of a model")
    p.add_argument("--config", required=True, help="run config YAML")
    p.add_argument("--ep-size", type=int, default=None, help="expert-parallel size (default: the config's)")
    p.set_defaults(func=_cmd_params)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as err:
        print(f"nestor-ds: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
