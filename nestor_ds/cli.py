"""The ``nestor-ds`` command. Heavy imports (torch, deepspeed) stay inside the commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Callable, Sequence

from nestor_ds import __version__
from nestor_ds.config import ConfigError, build_deepspeed_config, load_config
from nestor_ds.errors import RunStopped, UserError

if TYPE_CHECKING:  # the engine (torch, deepspeed) is imported only by the commands that run it
    from nestor_ds.engine.context import Mode


def _cmd_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, _parse_sets(args.set))
    if args.ds_config:
        ds = build_deepspeed_config(cfg, args.ds_config, args.world_size)
        print(json.dumps(ds, indent=2))
    else:
        print(cfg.model_dump_json(indent=2))
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    from nestor_ds.model.params import format_param_report, param_report

    cfg = load_config(args.config, {"parallel.ep_size": args.ep_size} if args.ep_size else None)
    ep = cfg.parallel.ep_size  # validated: it divides the expert count
    print(format_param_report(param_report(cfg.model, ep), cfg.model, ep))
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from nestor_ds.model.published import import_checkpoint

    r = import_checkpoint(args.kind, args.checkpoint, args.out, args.size, args.modes)
    m = r.model
    print(
        f"{args.kind} from {args.checkpoint}: width {m['width']}, {m['blocks']} blocks, afno_blocks "
        f"{m['afno_blocks']}, mlp_ratio {m['mlp_ratio']:g}, patch {m['patch_size']}, grid {m['grid']}, "
        f"channels {m['channels']}, t_in {m['t_in']}, t_out {m['t_out']}, normalize {m['normalize']}"
        + (f", {m['moe']['experts']} experts + {m['moe']['shared_experts']} shared" if "moe" in m else "")
    )
    print(f"{r.params:,d} parameters -> {r.out_dir}/model.safetensors, {r.out_dir}/config.yaml")
    print(
        f"fine-tune: deepspeed launch/train.py --config {r.out_dir}/config.yaml --ds_config ds_configs/cpu_fp32.json "
        f"--mode finetune --weights {r.out_dir}"
    )
    return 0


def _parse_sets(items: list[str]) -> dict[str, object]:
    import yaml

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (dotted key), got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def _add_run_arguments(p: argparse.ArgumentParser, ds_required: bool = True, config_required: bool = True) -> None:
    p.add_argument("--config", required=config_required, default=None, help="run config YAML")
    p.add_argument(
        "--ds_config",
        "--ds-config",
        dest="ds_config",
        required=ds_required,
        default="ds_configs/cpu_fp32.json",
        help="DeepSpeed JSON from ds_configs/",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.steps=20 (repeatable)",
    )
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def _run(args: argparse.Namespace, mode: Mode, weights: str | None) -> int:
    from pathlib import Path

    from nestor_ds.config.shipped import resolve_shipped
    from nestor_ds.engine.context import RunArgs
    from nestor_ds.engine.trainer import run

    run(
        RunArgs(
            resolve_shipped(args.config),
            resolve_shipped(args.ds_config),
            mode,
            Path(weights) if weights else None,
            _parse_sets(args.set),
            resume=not getattr(args, "no_resume", False),
        )
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    return _run(args, args.mode, args.weights)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """The config comes with the weights (a checkpoint or a model folder); outputs go to their own folder."""
    from nestor_ds.inference.model_io import evaluation_folder, write_model_config

    out = evaluation_folder(args.weights, args.out)
    if not args.config:
        args.config = str(write_model_config(args.weights, out))
    args.set = [f"train.output_dir={out}", *args.set]
    return _run(args, "evaluate", args.weights)


def _cmd_init(args: argparse.Namespace) -> int:
    from nestor_ds.config.shipped import copy_shipped

    written = copy_shipped(args.dir)
    print(f"{len(written)} files copied to {args.dir} (configs/, ds_configs/; existing files kept)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from nestor_ds.inference.model_io import export_model

    out = export_model(args.checkpoint, args.out, args.tag)
    print(
        f"{args.checkpoint} -> {out}/model.safetensors, {out}/config.yaml\n"
        f"load it: nestor_ds.load_model({str(out)!r}); predict: nestor-ds predict --model {out} --input FILE --steps N "
        f"--out DIR"
    )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nestor_ds.inference.files import predict_files

    written = predict_files(
        args.model, Path(args.input), Path(args.out), args.steps, args.key, args.device, args.dataset
    )
    for what, path in written.items():
        print(f"{what}: {path}")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    import logging

    from nestor_ds.studies import report_study, run_study

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    overrides = _parse_sets(args.set)
    if args.study_command == "run":
        return run_study(args.file, args.out, args.launcher, args.parallel, overrides)
    print(f"report: {report_study(args.file, args.out, overrides)}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    """Reads an existing store (never creates one); writes a file only where --markdown says."""
    from pathlib import Path

    from nestor_ds.tracking.compare import compare_runs, existing_store, format_markdown, format_terminal

    result = compare_runs(existing_store(args.tracking_uri, args.output_dir), args.runs, args.experiment)
    print(format_terminal(result))
    if args.markdown:
        out = Path(args.markdown)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(format_markdown(result))
        print(f"\nmarkdown: {out}")
    return 0


def _cmd_data_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nestor_ds.data.generate import Size, generate_suite

    size = Size(args.trajectories, args.resolution, args.frames)
    only = args.only.split(",") if args.only else None
    from nestor_ds.data.suite_index import INDEX

    for e in generate_suite(args.suite, args.out, size, args.seed, only):
        print(f"{e.name:<34} {e.format:<18} {e.path}")
    print(f"index: {Path(args.out) / INDEX}")
    return 0


def _cmd_data_shard(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from nestor_ds.data.convert import parse_size, shard_dataset

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.from_suite:
        from nestor_ds.data.suite_index import read_suite_index

        jobs = [(e.name, e.path, e.format, e.test) for e in read_suite_index(args.from_suite)]
    elif args.dataset and args.source:
        jobs = [(args.dataset, args.source, args.format, None)]
    else:
        raise ConfigError("give --dataset and --source, or --from-suite")
    problems = [p for p in args.problems.split(",") if p]
    for name, source, fmt, suite_test in jobs:
        manifests = shard_dataset(
            name,
            source,
            args.out,
            fmt=fmt,
            shard_bytes=parse_size(args.shard_size),
            per_shard=args.per_shard,
            workers=args.workers,
            test=args.test if args.test is not None else suite_test,
            valid=args.valid,
            channel_order=args.channel_order,
            problems=problems,
        )
        counts = ", ".join(f"{split} {m['count']} in {len(m['shards'])} shards" for split, m in manifests.items())
        print(f"{name}: {counts} -> {Path(args.out) / name}")
        first = next(iter(manifests.values()))
        predicted = first.get("predicted_channels")
        roles = f" (the first {predicted} predicted, the rest input only)" if predicted is not None else ""
        print(f"{name}: channels {first['channels']}{roles}, samples {first['shapes'][:1]} ({first['layout']})")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nestor_ds.tracking.report import build_report

    runs = {}
    for item in args.run:
        label, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(f"--run expects LABEL=RUN_DIR, got {item!r}")
        runs[label] = Path(path)
    report = build_report(runs, Path(args.out))
    if args.log_to_mlflow:
        from nestor_ds.tracking.report import attach_report

        print(f"attached to MLflow runs: {', '.join(attach_report(report, runs)) or 'none (no run ids)'}")
    print(f"report: {report}")
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """What launch/train.py runs (under deepspeed, torchrun or plain python)."""
    parser = argparse.ArgumentParser(prog="launch/train.py", description="Pre-train, fine-tune or evaluate NESTOR.")
    _add_train_arguments(parser)
    return answer("train", _cmd_train, parser.parse_args(argv))


def answer(prog: str, command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """The one error contract of every entry point: a user error (config, data, checkpoint, unsafe file) is one
    line and exit 2; a run that stopped itself for a reason it names is one line and exit 1; anything else is
    a bug and propagates with its traceback (exit 1)."""
    try:
        return command(args)
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except RunStopped as err:
        print(f"{prog}: stopped: {err}", file=sys.stderr)
        return 1


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    _add_run_arguments(p)
    p.add_argument("--mode", choices=["pretrain", "finetune", "evaluate"], default="pretrain")
    p.add_argument("--weights", help="finetune/evaluate: checkpoint dir or .safetensors (default train.init_from)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint in the checkpoint dir")


def _parser_config(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """config: validate a run config or print the derived DeepSpeed config."""
    p = sub.add_parser("config", help="validate a run config; with --ds-config print the derived DeepSpeed config")
    p.add_argument("--config", required=True, help="run config YAML")
    p.add_argument("--ds-config", "--ds_config", dest="ds_config", help="DeepSpeed JSON from ds_configs/")
    p.add_argument("--world-size", type=int, default=1, help="number of ranks the run will use")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, as for train (list items by index: data.datasets.0.weight=2)",
    )
    p.set_defaults(func=_cmd_config)


def _parser_params(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """params: parameter counts of a model."""
    p = sub.add_parser("params", help="count total, active-per-sample and per-rank parameters of a model")
    p.add_argument("--config", required=True, help="run config YAML")
    p.add_argument("--ep-size", type=int, default=None, help="expert-parallel size (default: the config's)")
    p.set_defaults(func=_cmd_params)


def _parser_import(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """import: a published DPOT or MoE-POT checkpoint."""
    p = sub.add_parser("import", help="convert a published DPOT or MoE-POT checkpoint into this project's format")
    p.add_argument(
        "kind", choices=["dpot", "moepot", "dpot3d"], help="which published model the checkpoint is (dpot3d: DPOTNet3D)"
    )
    p.add_argument("checkpoint", help="the published .pth ({'model': state_dict})")
    p.add_argument("--out", required=True, help="folder for model.safetensors, config.yaml and import.json")
    p.add_argument("--size", default=None, help="cross-check a published size (dpot: Ti S M L H; moepot: Ti S M)")
    p.add_argument(
        "--modes",
        type=int,
        default=None,
        help="AFNO modes the model was trained with (not stored in checkpoints; default 32)",
    )
    p.set_defaults(func=_cmd_import)


def _parser_data(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """data generate / data shard."""
    data = sub.add_parser("data", help="generate PDE data sets and convert them to WebDataset shards")
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = dsub.add_parser("generate", help="run our solvers and write data sets in their original layouts")
    p.add_argument("--suite", default="small")
    p.add_argument("--out", required=True)
    p.add_argument("--trajectories", type=int, default=10, help="per data set")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated data set names")
    p.set_defaults(func=_cmd_data_generate)
    p = dsub.add_parser("shard", help="convert original files to shards + manifests under the published split")
    p.add_argument("--dataset", help="registry name")
    p.add_argument("--source", help="the original file, folder (PDEArena, CFDBench) or glob (PDEArena)")
    p.add_argument("--format", default=None, help="default: the registry's format for --dataset")
    p.add_argument("--from-suite", default=None, help="shard everything 'data generate' wrote to this folder")
    p.add_argument("--out", required=True, help="shard root (one folder per data set)")
    p.add_argument("--shard-size", default="256MB", help="target bytes of arrays per shard, e.g. 256MB, 1GiB")
    p.add_argument("--per-shard", type=int, default=None, help="fixed trajectories (CFDBench: cases) per shard")
    p.add_argument("--workers", type=int, default=1, help="conversion processes (shards are identical for any N)")
    p.add_argument(
        "--test",
        type=float,
        default=None,
        help="override the published split: trailing test trajectories (N >= 1) or test share (< 1)",
    )
    p.add_argument(
        "--valid",
        choices=["dpot", "train", "separate", "drop"],
        default="dpot",
        help="PDEArena valid files / CFDBench dev cases / the Well's valid folder (dpot: into train / dropped, "
        "as DPOT; the Well: its own split)",
    )
    p.add_argument(
        "--channel-order",
        choices=["dpot", "file"],
        default="dpot",
        help="PDEBench CFD channels: dpot = Vx, Vy, density, pressure; file = density, pressure, Vx, Vy",
    )
    p.add_argument("--problems", default="cavity,cylinder,tube", help="CFDBench problems read (DPOT: all three)")
    p.set_defaults(func=_cmd_data_shard)


def _parser_train(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """train: one process (launchers run launch/train.py)."""
    p = sub.add_parser("train", help="pre-train or fine-tune (single process; use deepspeed/torchrun for several)")
    _add_train_arguments(p)
    p.set_defaults(func=_cmd_train)


def _parser_evaluate(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """evaluate: a checkpoint or model folder on its test sets."""
    p = sub.add_parser("evaluate", help="L2RE per data set (one step and rollout) of a checkpoint or model folder")
    _add_run_arguments(p, ds_required=False, config_required=False)
    p.add_argument(
        "--weights",
        "--checkpoint",
        dest="weights",
        required=True,
        help="DeepSpeed checkpoint dir or model folder (nestor-ds export/import); its config is used",
    )
    p.add_argument("--out", default=None, help="output folder (default: <run>/evaluation, beside the checkpoints)")
    p.set_defaults(func=_cmd_evaluate)


def _parser_init(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """init: copy the shipped configs."""
    p = sub.add_parser("init", help="copy the shipped configs (configs/, ds_configs/, studies/) into DIR to edit")
    p.add_argument("dir", nargs="?", default=".", help="target folder (default: here)")
    p.set_defaults(func=_cmd_init)


def _parser_export(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """export: a checkpoint as one model folder."""
    p = sub.add_parser("export", help="a checkpoint of any ep_size as one model folder: weights + resolved config")
    p.add_argument("checkpoint", help="DeepSpeed checkpoint dir (with 'latest')")
    p.add_argument("--out", required=True, help="folder for model.safetensors, config.yaml, export.json")
    p.add_argument("--tag", default=None, help="checkpoint tag (default: latest)")
    p.set_defaults(func=_cmd_export)


def _parser_predict(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """predict: roll a model out on a user's fields."""
    p = sub.add_parser("predict", help="roll a trained model out on your own fields (.npy or HDF5)")
    p.add_argument("--model", required=True, help="model folder (nestor-ds export/import) or checkpoint dir")
    p.add_argument("--input", required=True, help="[X, Y, T, C] or [B, X, Y, T, C] array, .npy or .h5")
    p.add_argument("--key", default=None, help="HDF5 dataset (default: the file's only one)")
    p.add_argument("--steps", type=int, required=True, help="frames to predict after the first t_in")
    p.add_argument("--out", required=True, help="folder for the prediction and its figure")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--dataset",
        default=None,
        help="the training data set the fields are like (its channel names and, with model.normalize=stats, its "
        "units); default: the only one",
    )
    p.set_defaults(func=_cmd_predict)


def _parser_study(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """study run / study report."""
    study = sub.add_parser("study", help="run a study (arms x seeds of ordinary runs) and report it")
    ssub = study.add_subparsers(dest="study_command", metavar="STUDY_COMMAND", required=True)
    for name, helptext in (
        (
            "run",
            "run every arm x seed (a re-run skips finished runs and resumes killed ones); writes the report at the end",
        ),
        (
            "report",
            "markdown report of a study's runs: L2RE per data set, wins, paired differences, compute, learning curves",
        ),
    ):
        p = ssub.add_parser(name, help=helptext)
        p.add_argument("file", help="study YAML (studies/...)")
        p.add_argument("--out", default=None, help="study folder (default: runs/studies/<name>)")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a value of the base run config for every arm (e.g. data.root=...)",
        )
        if name == "run":
            p.add_argument("--launcher", choices=["torchrun", "deepspeed", "slurm"], default="torchrun")
            p.add_argument("--parallel", type=int, default=1, help="local runs at once (torchrun/deepspeed)")
        p.set_defaults(func=_cmd_study)


def _parser_report(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """report: markdown of finished runs."""
    p = sub.add_parser("report", help="markdown report with L2RE tables and figures of finished runs")
    p.add_argument("--run", action="append", required=True, metavar="LABEL=RUN_DIR", help="repeatable")
    p.add_argument("--out", required=True, help="folder for REPORT.md and figures/")
    p.add_argument("--log-to-mlflow", action="store_true", help="attach the report to each run in MLflow")
    p.set_defaults(func=_cmd_report)


def _parser_compare(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """compare: MLflow runs side by side."""
    p = sub.add_parser("compare", help="side-by-side table of MLflow runs: final metrics and differing config")
    p.add_argument("runs", nargs="*", help="run ids or names (default: the newest runs of --experiment)")
    p.add_argument("--experiment", default=None)
    p.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or <output-dir>/mlflow.db")
    p.add_argument("--output-dir", default="runs", help="folder holding the sqlite store mlflow.db")
    p.add_argument("--markdown", default=None, help="also write the table to this file")
    p.set_defaults(func=_cmd_compare)


def build_parser() -> argparse.ArgumentParser:
    """The `nestor-ds` parser: one sub-command per job, each added by its own `_parser_*` function."""
    parser = argparse.ArgumentParser(prog="nestor-ds", description="NESTOR nested-MoE neural operators on DeepSpeed.")
    parser.add_argument("--version", action="version", version=f"nestor-ds {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _parser_config(sub)
    _parser_params(sub)
    _parser_import(sub)
    _parser_data(sub)
    _parser_train(sub)
    _parser_evaluate(sub)
    _parser_init(sub)
    _parser_export(sub)
    _parser_predict(sub)
    _parser_study(sub)
    _parser_report(sub)
    _parser_compare(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``nestor-ds`` command."""
    args = build_parser().parse_args(argv)
    return answer("nestor-ds", args.func, args)


if __name__ == "__main__":
    sys.exit(main())
