"""Experiment tracking: MLflow runs written from rank 0, run comparison, diagnostic plots."""

from nestor_ds.tracking.compare import (
    ComparisonResult,
    RunSummary,
    compare_runs,
    format_markdown,
    format_terminal,
)
from nestor_ds.tracking.mlflow_run import Tracker, flatten, resolve_uri, sanitize_name
from nestor_ds.tracking.plots import (
    plot_expert_heatmap,
    plot_loss_curves,
    plot_rollout_errors,
    plot_sample,
)

__all__ = [
    "ComparisonResult",
    "RunSummary",
    "Tracker",
    "compare_runs",
    "flatten",
    "format_markdown",
    "format_terminal",
    "plot_expert_heatmap",
    "plot_loss_curves",
    "plot_rollout_errors",
    "plot_sample",
    "resolve_uri",
    "sanitize_name",
]
