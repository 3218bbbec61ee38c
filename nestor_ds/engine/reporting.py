"""Evaluation outputs a person reads: the table (CSV, JSON), plots, all logged to MLflow too."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from nestor_ds.engine.evaluate import EvalResult, format_table
from nestor_ds.tracking.mlflow_run import Tracker


def write_eval_outputs(
    result: EvalResult, folder: Path, tracker: Tracker, step: int, history: list[dict[str, float]] | None = None
) -> dict[str, Path]:
    """Tables, plots and JSON of an evaluation into ``folder``, each logged to the tracker; returns the files."""
    from nestor_ds.tracking.plots import (
        plot_expert_heatmap,
        plot_loss_curves,
        plot_rollout_errors,
        plot_sample,
    )

    folder.mkdir(parents=True, exist_ok=True)
    rows = result.rows()
    paths: dict[str, Path] = {
        "csv": folder / "eval_table.csv",
        "json": folder / "eval_table.json",
        "txt": folder / "eval_table.txt",
    }
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["dataset"])
        writer.writeheader()
        writer.writerows(rows)
    paths["json"].write_text(json.dumps({"step": step, "datasets": rows}, indent=1))
    paths["txt"].write_text(format_table(result) + "\n")

    for d in result.datasets:
        if d.example is not None:
            ex = d.example
            real = ex["mask"].reshape(-1, ex["mask"].shape[-1]).max(0) > 0
            names = (d.channels + [f"channel {c}" for c in range(len(d.channels), len(real))])[: len(real)]
            names = [n for n, keep in zip(names, real) if keep]
            paths[f"sample_{d.name}"] = plot_sample(
                ex["input"][..., real],
                ex["truth"][..., real],
                ex["prediction"][..., real],
                names,
                f"{d.name}: one-step prediction" + (f" (the plane z = {int(ex['mid_z'])})" if "mid_z" in ex else ""),
                folder / f"sample_{d.name}.png",
            )
    curves = {d.name: d.rollout_curve for d in result.datasets if d.rollout_curve.size}
    if curves:
        paths["rollout"] = plot_rollout_errors(
            curves, folder / "rollout_errors.png", {d.name: d.persistence.curve for d in result.datasets}
        )
    loaded = [d for d in result.datasets if d.image_load is not None and d.token_load is not None]
    if loaded:
        image = np.stack([np.asarray(d.image_load).sum(0) for d in loaded])
        paths["experts_image"] = plot_expert_heatmap(
            image,
            [d.name for d in loaded],
            [f"E{e}" for e in range(image.shape[1])],
            "image-level experts: share of each data set's samples",
            folder / "experts_image.png",
        )
        token = np.stack([np.asarray(d.token_load).sum((0, 1)) for d in loaded])
        if token.size and token.sum() > 0:
            paths["experts_token"] = plot_expert_heatmap(
                token,
                [d.name for d in loaded],
                [f"S{e}" for e in range(token.shape[1])],
                "token-level sub-experts: share of each data set's tokens",
                folder / "experts_token.png",
            )
    if history:
        curves_hist = {"train loss": [(int(h["step"]), h["train/loss"]) for h in history]}
        paths["loss"] = plot_loss_curves(curves_hist, folder / "loss_curves.png")
        (folder / "history.json").write_text(json.dumps(history, indent=1))
    for path in paths.values():
        tracker.log_artifact(path, "eval")
    return paths
