"""A report a person opens: markdown with the L2RE tables and the figures of one or more runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from nestor_ds.errors import UserError
from nestor_ds.tracking.plots import plot_loss_curves

FIGURES = [
    ("sample_", "Truth vs prediction vs error (one test sample, one step)"),
    ("rollout_errors", "Rollout error per step"),
    ("experts_image", "Image-level routing: which experts each data set uses"),
    ("experts_token", "Token-level routing: which sub-experts each data set's tokens use"),
]


def _load(run_dir: Path) -> dict[str, Any]:
    eval_dir = run_dir / "eval"
    table = eval_dir / "eval_table.json"
    if not table.is_file():
        raise UserError(f"{run_dir}: no eval/eval_table.json (did the run finish?)")
    history = json.loads((eval_dir / "history.json").read_text()) if (eval_dir / "history.json").is_file() else []
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    return {"table": json.loads(table.read_text()), "history": history, "summary": summary, "eval_dir": eval_dir}


def _num(row: dict[str, Any], key: str, digits: int = 4) -> str:
    value = row.get(key)
    return "–" if value is None or value != value else f"{value:.{digits}f}"  # value != value: NaN


def _table(rows: list[dict[str, Any]]) -> str:
    """L2RE beside persistence, linear extrapolation and the ratio to persistence; losses named in words."""
    lines = [
        "| data set | test traj. | one step | persistence | linear | ratio | rollout | persistence | linear | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [_num(r, k) for k in ("l2re_one_step", "persistence_one_step", "linear_one_step")]
        cells += [_num(r, "ratio_one_step", 2)]
        cells += [_num(r, k) for k in ("l2re_rollout", "persistence_rollout", "linear_rollout")]
        cells += [_num(r, "ratio_rollout", 2)]
        lines.append(f"| {r['dataset']} | {r['trajectories']} | " + " | ".join(cells) + " |")
    lines += ["", "ratio = model / persistence (the last input frame, scored the same way): below 1 beats it."]
    for key, words in (("ratio_one_step", "one step ahead"), ("ratio_rollout", "in rollout")):
        losing = [r["dataset"] for r in rows if key in r and not (r[key] is not None and r[key] < 1)]
        if losing:
            lines.append(f"**Worse than persistence {words}** on {len(losing)} of {len(rows)}: {', '.join(losing)}.")
    return "\n".join(lines)


def build_report(runs: dict[str, Path], out: Path, title: str = "NESTOR-DS run report") -> Path:
    """Write ``out/REPORT.md`` and ``out/figures/``; returns the markdown path."""
    out = Path(out)
    figures = out / "figures"
    if figures.exists():
        shutil.rmtree(figures)
    figures.mkdir(parents=True)
    loaded = {label: _load(Path(d)) for label, d in runs.items()}
    parts = [f"# {title}", ""]
    parts += [
        "Relative L2 error (L2RE) per data set on held-out test trajectories, over real grid points and "
        "channels only: *one step* predicts each frame from the true previous frames, *rollout* feeds the "
        "model's own predictions back until the trajectory ends.",
        "",
    ]
    for label, run in loaded.items():
        s = run["summary"]
        parts += [f"## {label}", ""]
        if s.get("mlflow_run_id"):
            parts += [
                f"MLflow run `{s['mlflow_run_id']}` in `{s.get('mlflow_uri', '')}`, step {run['table']['step']}.",
                "",
            ]
        parts += [_table(run["table"]["datasets"]), ""]
    curves = {
        f"{label}: train loss": [(int(h["step"]), float(h["train/loss"])) for h in run["history"]]
        for label, run in loaded.items()
        if run["history"]
    }
    if curves:
        plot_loss_curves(curves, figures / "loss_curves.png")
        parts += ["## Loss curves", "", "![loss curves](figures/loss_curves.png)", ""]
    for prefix, heading in FIGURES:
        found = [(label, f) for label, run in loaded.items() for f in sorted(run["eval_dir"].glob(f"{prefix}*.png"))]
        if not found:
            continue
        parts += [f"## {heading}", ""]
        for label, f in found:
            target = figures / f"{label}_{f.name}"
            shutil.copy2(f, target)
            parts += [
                f"**{label}** — {f.stem.removeprefix('sample_')}",
                "",
                f"![{label} {f.stem}](figures/{target.name})",
                "",
            ]
    report = out / "REPORT.md"
    report.write_text("\n".join(parts))
    return report


def attach_report(report: Path, run_dirs: dict[str, Path]) -> list[str]:
    """Log the report folder as an artifact of each run's MLflow record (found through its ``summary.json``);
    returns the run ids it was attached to."""
    from nestor_ds.tracking.mlflow_run import Tracker

    attached = []
    for run_dir in run_dirs.values():
        summary = _load(run_dir)["summary"]
        if summary.get("mlflow_run_id"):
            with Tracker(
                summary["mlflow_uri"],
                "report",
                None,
                run_dir / "mlflow-artifacts",
                True,
                run_id=summary["mlflow_run_id"],
            ) as tracker:  # attaches to the existing run
                tracker.log_artifact(report.parent, "report")
            attached.append(summary["mlflow_run_id"])
    return attached
