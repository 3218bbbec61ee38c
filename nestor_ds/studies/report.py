"""``nestor-ds study report``: the study's runs side by side, as markdown with a learning-curve plot.

Per data set L2RE (one step and rollout) as mean +- std over seeds with the best arm in bold; wins per arm
(best of all arms, and better than the baseline as the paper counts them); the paired difference to the
baseline with its 95% t-interval; compute per arm; learning curves; and, where the study maps arms to the
published table, the published numbers beside ours, marked as another setup unless the study runs on the
published data sets and splits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nestor_ds.studies import stats
from nestor_ds.studies.spec import PlannedRun, StudySpec

METRICS = {"l2re_one_step": "one-step L2RE", "l2re_rollout": "rollout L2RE"}
BASELINES = {"persistence": "persistence", "linear": "linear extrapolation"}  # eval-table column prefixes


@dataclass
class StudyResults:
    """What the runs left on disk and in the study's MLflow store."""

    metrics: dict[str, stats.Results] = field(default_factory=dict)  # metric -> arm -> seed -> set -> value
    curves: dict[str, list[list[tuple[int, float]]]] = field(default_factory=dict)  # arm -> one curve per run
    compute: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm -> columns
    missing: list[str] = field(default_factory=list)  # runs without results
    # metric -> baseline -> set -> value (the same test windows for every arm and seed: the first run's)
    baselines: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


def collect(spec: StudySpec, runs: list[PlannedRun], uri: str) -> StudyResults:
    """The study's final metrics per arm, seed and data set, read from MLflow."""
    res = StudyResults({m: {} for m in METRICS})
    mlflow_runs = _mlflow_runs(uri, f"study-{spec.name}")
    for run in runs:
        if not run.report:
            continue
        table = run.out / "eval" / "eval_table.json"
        if not run.done or not table.is_file():
            res.missing.append(run.key)
            continue
        for row in json.loads(table.read_text())["datasets"]:
            for metric in METRICS:
                res.metrics[metric].setdefault(run.arm, {}).setdefault(run.seed, {})[row["dataset"]] = row[metric]
                for base in BASELINES:
                    value = row.get(metric.replace("l2re", base))
                    if value is not None and value == value:  # not NaN (linear needs t_in >= 2)
                        res.baselines.setdefault(metric, {}).setdefault(base, {}).setdefault(row["dataset"], value)
        found = mlflow_runs.get(run.key)
        if found is not None and found["curve"]:
            res.curves.setdefault(run.arm, []).append(found["curve"])
        _add_compute(res.compute.setdefault(run.arm, {"runs": 0, "wall_s": 0.0, "rank_s": 0.0}), run, found)
    return res


def _mlflow_runs(uri: str, experiment: str) -> dict[str, dict[str, Any]]:
    """run name -> its train-loss history (last value per step: a rollback re-logs steps) and tags."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    out = {}
    # a run name may have several MLflow runs (an attempt killed before its first checkpoint): the finished one
    children = [
        r for r in client.search_runs([exp.experiment_id], max_results=5000) if "mlflow.parentRunId" in r.data.tags
    ]
    for r in sorted(children, key=lambda r: (r.info.status == "FINISHED", r.info.start_time)):
        by_step = {
            m.step: m.value
            for m in sorted(client.get_metric_history(r.info.run_id, "train/loss"), key=lambda m: m.timestamp)
        }
        out[r.info.run_name] = {"curve": sorted(by_step.items()), "device": r.data.tags.get("device", "?")}
    return out


def _add_compute(acc: dict[str, Any], run: PlannedRun, found: dict[str, Any] | None) -> None:
    from nestor_ds.config.loading import load_config
    from nestor_ds.model.params import param_report

    resolved = run.out / "config.resolved.yaml"
    if not resolved.is_file():
        return
    cfg = load_config(resolved)
    if "active_params" not in acc:
        report = param_report(cfg.model, 1)
        acc.update(
            active_params=report.active_per_sample,
            total_params=report.total,
            gflops_per_sample=_forward_gflops(cfg.model),
        )
    wall = run.out / "study_run.json"
    if wall.is_file():
        state = json.loads(wall.read_text())
        acc["wall_s"] += state["wall_s"]
        acc["rank_s"] += state["wall_s"] * state.get("ranks", run.ranks)
    summary = json.loads((run.out / "summary.json").read_text())
    steps = float(summary.get("step", 0))  # the last step the run reached (a time budget ends it early)
    unrolled = cfg.train.target_frames(cfg.model.t_out) // cfg.model.t_out  # forwards per sample (train.t_ar)
    acc["samples"] = (
        acc.get("samples", 0.0) + steps * cfg.train.micro_batch_per_rank * cfg.train.grad_accum * run.ranks * unrolled
    )
    acc["runs"] += 1
    acc["device"] = found["device"] if found else acc.get("device", "?")


def _forward_gflops(model_cfg: Any) -> float:
    """Forward FLOPs of one sample (torch's flop counter over a real forward, ep_size 1)."""
    import torch

    from nestor_ds.model import build_model
    from nestor_ds.profiling import count_flops

    model = build_model(model_cfg, 1, seed=0).eval()
    x = torch.randn(model_cfg.input_shape(1))
    with torch.no_grad():
        return count_flops(lambda: model(x)) / 1e9


def _cell(s: stats.Summary | None, bold: bool, persistence: float | None = None) -> str:
    if s is None:
        return "-"
    if not np.isfinite(s.mean):
        return "diverged (nan)"
    text = f"{s.mean:.4g} ± {s.std:.2g}" if s.n > 1 else f"{s.mean:.4g}"
    text = f"**{text}**" if bold else text
    return text + (f" ({s.mean / persistence:.2f}×)" if persistence else "")


def render(spec: StudySpec, res: StudyResults, curves_png: str | None) -> str:
    """The study report as markdown."""
    arms = [a.name for a in spec.arms if a.report and any(a.name in r for r in res.metrics.values())]
    base = spec.baseline_arm
    lines = [
        f"# Study `{spec.name}`",
        "",
        spec.description.strip(),
        "",
        f"Seeds {spec.seeds}; budget per run: {spec.budget.model_dump(exclude_none=True)}; {spec.ranks} "
        f"rank(s) per run; data: {spec.data}. Baseline: `{base}`. Wins are counted on "
        f"{METRICS[spec.metric]}; lower is better, the best arm per data set in bold.",
        "",
    ]
    if res.missing:
        lines += [f"**Incomplete:** no results yet for {', '.join(res.missing)}.", ""]
    for metric, title in METRICS.items():
        results = {a: res.metrics[metric][a] for a in arms if a in res.metrics[metric]}
        if not results:
            continue
        t, best = stats.table(results), stats.best_arms(results)
        bases = res.baselines.get(metric, {})
        persist = bases.get("persistence", {})
        lines += [
            f"## {title} (mean ± std over seeds; in brackets: ÷ persistence, below 1 beats it)",
            "",
            "| data set | " + " | ".join(arms + [BASELINES[b] for b in bases]) + " |",
            "|---|" + "---:|" * (len(arms) + len(bases)),
        ]
        for ds, row in t.items():
            cells = [_cell(row.get(a), best.get(ds) == a, persist.get(ds)) for a in arms]
            cells += [f"{bases[b][ds]:.4g}" if ds in bases[b] else "-" for b in bases]
            lines.append(f"| {ds} | " + " | ".join(cells) + " |")
        w = stats.wins(results)
        lines.append("| **best on** | " + " | ".join(f"{w[a]} of {len(t)}" for a in arms) + " |")
        worse: list[str] = []
        if persist:  # counted over the sets each arm has results on (fine-tuning arms: their own sets)
            scored = {a: [ds for ds, row in t.items() if row.get(a) and ds in persist] for a in arms}
            beats = {a: [ds for ds in scored[a] if t[ds][a].mean < persist[ds]] for a in arms}
            lines.append(
                "| **beats persistence on** | "
                + " | ".join(f"{len(beats[a])} of {len(scored[a])}" for a in arms)
                + " |"
            )
            worse = [
                f"`{a}` on {', '.join(ds for ds in scored[a] if ds not in beats[a])}"
                for a in arms
                if len(beats[a]) < len(scored[a])
            ]
        if base in results:
            over = stats.wins_over(results, base)
            lines.append(
                f"| **better than {base} on** | "
                + " | ".join("-" if a == base else f"{over[a][0]} of {over[a][1]}" for a in arms)
                + " |"
            )
        if worse:
            lines += ["", "Worse than persistence (the last input frame): " + "; ".join(worse) + "."]
        lines.append("")
    lines += _paired(spec, res, arms, base)
    lines += _compute(res, arms)
    if curves_png:
        lines += ["## Learning curves", "", f"![train loss per arm, mean over seeds]({curves_png})", ""]
    lines += _published(spec, res)
    return "\n".join(lines).rstrip() + "\n"


def _paired(spec: StudySpec, res: StudyResults, arms: list[str], base: str) -> list[str]:
    results = res.metrics[spec.metric]
    others = [a for a in arms if a != base and a in results]
    if base not in results or not others:
        return []
    lines = [
        f"## Paired difference to `{base}` ({METRICS[spec.metric]}, arm − baseline, same seed)",
        "",
        "Negative: the arm is better. The 95% t-interval over seeds; *decided* where it excludes 0.",
        "",
        "| data set | " + " | ".join(others) + " |",
        "|---|" + "---:|" * len(others),
    ]
    for ds in stats.datasets_of(results):
        cells = []
        for arm in others:
            d = stats.paired_difference(
                {s: v[ds] for s, v in results[arm].items() if ds in v},
                {s: v[ds] for s, v in results[base].items() if ds in v},
            )
            if d is None:
                cells.append("-")
            elif d.low is None:
                cells.append(f"{d.mean:+.3g} (1 seed)")
            else:
                cells.append(f"{d.mean:+.3g} [{d.low:+.3g}, {d.high:+.3g}]" + (" *decided*" if d.decided else ""))
        lines.append(f"| {ds} | " + " | ".join(cells) + " |")
    return lines + [""]


def _compute(res: StudyResults, arms: list[str]) -> list[str]:
    lines = [
        "## Compute per arm (all its runs)",
        "",
        "| arm | active params | total params | forward GFLOPs/sample "
        "| train TFLOPs (≈3×fwd×samples×unrolled steps) | wall h | rank-hours | device |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for arm in arms:
        c = res.compute.get(arm)
        if not c or "active_params" not in c:
            continue
        tflops = 3 * c["gflops_per_sample"] * c.get("samples", 0.0) / 1e3
        lines.append(
            f"| {arm} | {c['active_params'] / 1e6:.2f} M | {c['total_params'] / 1e6:.2f} M | "
            f"{c['gflops_per_sample']:.3g} | {tflops:.3g} | {c['wall_s'] / 3600:.3f} | "
            f"{c['rank_s'] / 3600:.3f} | {c['device']} |"
        )
    return lines + [""]


def _published(spec: StudySpec, res: StudyResults) -> list[str]:
    from nestor_ds.studies.published import ROWS, published_value

    if not spec.published:
        return []
    setup = (
        "the same data sets and splits as the paper (budgets may differ)"
        if spec.data == "published"
        else "**another setup**: the project's generated data, not the published sets; the numbers are not "
        "comparable, only the ordering of arms is of interest"
    )
    cols = list(spec.published.items())
    lines = [
        "## Published numbers beside ours",
        "",
        f"Published: NESTOR paper (DESIGN.md §5). Ours: {setup}.",
        "",
        "| data set | " + " | ".join(f"{arm} (ours) | {col} (published)" for arm, col in cols) + " |",
        "|---|" + "---:|---:|" * len(cols),
    ]
    results = res.metrics["l2re_one_step"]
    for label, sets, _ in ROWS:
        cells = []
        for arm, col in cols:
            ours = [
                float(np.mean([v[s] for v in results.get(arm, {}).values() if s in v]))
                for s in sets
                if any(s in v for v in results.get(arm, {}).values())
            ]
            cells += [f"{np.mean(ours):.4g}" if len(ours) == len(sets) else "-", f"{published_value(label, col):.4g}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def write_report(spec: StudySpec, runs: list[PlannedRun], out: Path, uri: str) -> Path:
    """``<study dir>/report.md`` (and ``learning_curves.png``); returns the markdown's path."""
    from nestor_ds.atomic import write_text_atomic
    from nestor_ds.tracking.plots import plot_loss_curves

    res = collect(spec, runs, uri)
    png = None
    mean_curves = {}
    for arm, curves in res.curves.items():  # mean over seeds (and data sets, for per-set runs)
        steps = sorted(set.intersection(*(set(dict(c)) for c in curves)))
        if steps:
            mean_curves[arm] = [(s, float(np.mean([dict(c)[s] for c in curves]))) for s in steps]
    if mean_curves:
        png = plot_loss_curves(mean_curves, out / "learning_curves.png").name
    path = out / "report.md"
    write_text_atomic(path, render(spec, res, png))
    return path
