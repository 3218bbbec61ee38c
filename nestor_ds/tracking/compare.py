"""Side-by-side comparison of MLflow runs: final metrics and the config keys that differ.

Meant for ablation write-ups ("what changed, and what did it do?"): the metric
table shows each run's last logged value, the config table hides every param that
is identical across the runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nestor_ds.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

MISSING = "–"
DEFAULT_MAX_RUNS = 10


@dataclass(frozen=True)
class RunSummary:
    """The identity of one compared run."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    start_time: int | None
    label: str  # column header: the run name, plus a short id when names repeat


@dataclass
class ComparisonResult:
    """Final metric values and differing params of several runs, keyed by run id."""

    runs: list[RunSummary]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> run id -> last value
    param_diffs: dict[str, dict[str, str | None]] = field(default_factory=dict)  # key -> run id -> value

    def metric_names(self) -> list[str]:
        """Metric names in display order: ``eval/*`` first, each group sorted."""
        return sorted(self.metrics, key=lambda name: (not name.startswith("eval/"), name))


def _search(uri: str, experiment: str | None) -> "pd.DataFrame":
    """Every run of ``experiment`` (or of all experiments), newest first, as MLflow's own table: one row per
    run, ``metrics.*`` holding each metric's latest value, ``params.*`` and ``tags.*``."""
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        if experiment is not None and mlflow.get_experiment_by_name(experiment) is None:
            raise UserError(f"no MLflow experiment named {experiment!r} at {uri}")
        return mlflow.search_runs(
            experiment_names=[experiment] if experiment is not None else None,
            search_all_experiments=experiment is None,
            order_by=["attributes.start_time DESC"],
            output_format="pandas",
        )
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None: unset again, as it was


def _pick(table: "pd.DataFrame", refs: list[str], experiment: str | None, uri: str) -> "pd.DataFrame":
    """The rows the user named, by run id or run name (a name used by several runs: the newest), in order."""
    names = table["tags.mlflow.runName"] if "tags.mlflow.runName" in table else table["run_id"] * 0
    rows: list[int] = []
    for ref in refs:
        hits = table.index[(table["run_id"] == ref) | (names == ref)]
        if len(hits) == 0:
            where = f"experiment {experiment!r}" if experiment is not None else "any experiment"
            raise UserError(f"no MLflow run with id or name {ref!r} in {where} at {uri}")
        if hits[0] not in rows:  # the same run named twice (id and name) shows once
            rows.append(hits[0])
    return table.loc[rows]


def _labels(names: list[str], ids: list[str]) -> list[str]:
    return [f"{name} ({rid[:8]})" if names.count(name) > 1 else name for name, rid in zip(names, ids)]


def compare_runs(uri: str, runs: list[str], experiment: str | None = None) -> ComparisonResult:
    """Collect what differs between runs given by id or name (``mlflow.search_runs``' table).

    Names resolve within ``experiment`` when given, else across all active
    experiments; a name used by several runs means the newest. With no ``runs``,
    the newest ``DEFAULT_MAX_RUNS`` runs of ``experiment`` are compared.
    """
    import math

    import pandas as pd

    refs = [str(r) for r in runs]
    if not refs and experiment is None:
        raise UserError("compare_runs needs run ids/names or an experiment to take runs from")
    table = _search(uri, experiment).reset_index(drop=True)
    if not refs:
        if table.empty:
            raise UserError(f"MLflow experiment {experiment!r} has no runs at {uri}")
        found = table.head(DEFAULT_MAX_RUNS)
    else:
        found = _pick(table, refs, experiment, uri)
    ids = [str(i) for i in found["run_id"]]
    names = [
        str(n) if isinstance(n, str) and n else i[:8]
        for n, i in zip(found.get("tags.mlflow.runName", [None] * len(ids)), ids)
    ]
    summaries = [
        RunSummary(
            run_id=rid,
            run_name=name,
            experiment_id=str(row["experiment_id"]),
            status=str(row["status"]),
            start_time=int(row["start_time"].timestamp() * 1000) if pd.notna(row["start_time"]) else None,
            label=label,
        )
        for rid, name, label, (_, row) in zip(ids, names, _labels(names, ids), found.iterrows())
    ]
    result = ComparisonResult(runs=summaries)
    for column in (c for c in found.columns if c.startswith("metrics.")):
        values = {rid: float(v) for rid, v in zip(ids, found[column]) if v is not None and not math.isnan(v)}
        if values:
            result.metrics[column.removeprefix("metrics.")] = values
    for column in sorted(c for c in found.columns if c.startswith("params.")):
        texts = {rid: (v if isinstance(v, str) else None) for rid, v in zip(ids, found[column])}
        if len(set(texts.values())) > 1:
            result.param_diffs[column.removeprefix("params.")] = texts
    return result


def _fmt(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4g}"


def _clip(text: str | None, width: int) -> str:
    if text is None:
        return MISSING
    text = " ".join(str(text).split())  # no newlines inside a table cell
    return text if len(text) <= width else text[: width - 1] + "…"


def _tables(result: ComparisonResult, max_cell: int) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for both tables, cells already formatted."""
    ids = [r.run_id for r in result.runs]
    labels = [r.label for r in result.runs]
    metric_rows = [[name] + [_fmt(result.metrics[name].get(i)) for i in ids] for name in result.metric_names()]
    param_rows = [[key] + [_clip(result.param_diffs[key].get(i), max_cell) for i in ids] for key in result.param_diffs]
    return [
        ("Metrics", ["metric", *labels], metric_rows),
        ("Config differences", ["param", *labels], param_rows),
    ]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def format_markdown(result: ComparisonResult, max_cell: int = 80) -> str:
    """Two GitHub-flavoured markdown tables, for reports and pull requests."""
    out: list[str] = []
    for title, header, rows in _tables(result, max_cell):
        out += [f"### {title}", ""]
        if not rows:
            out += ["_none_" if title == "Metrics" else "_no differences_", ""]
            continue
        align = "---:" if title == "Metrics" else "---"
        out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
        out.append("|---|" + "|".join([align] * (len(header) - 1)) + "|")
        for row in rows:
            out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def format_terminal(result: ComparisonResult, max_cell: int = 40) -> str:
    """The same tables as aligned plain text (numbers right-aligned)."""
    out: list[str] = []
    for title, header, rows in _tables(result, max_cell):
        out += [title, "=" * len(title)]
        if not rows:
            out += ["(none)" if title == "Metrics" else "(no differences)", ""]
            continue
        widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
        right = title == "Metrics"

        def line(cells: list[str]) -> str:
            parts = [cells[0].ljust(widths[0])]
            parts += [(c.rjust(w) if right else c.ljust(w)) for c, w in zip(cells[1:], widths[1:])]
            return "  ".join(parts).rstrip()

        out.append(line(header))
        out.append("  ".join("-" * w for w in widths))
        out += [line(row) for row in rows]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def existing_store(tracking_uri: str | None, output_dir: str | Path) -> str:
    """The MLflow store to read: ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else ``<output_dir>/mlflow.db``,
    which must exist (reading never creates a store)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = Path(output_dir) / "mlflow.db"
    if not store.is_file():
        raise UserError(f"no MLflow store at {store}: pass --tracking-uri, or --output-dir of a run folder")
    return f"sqlite:///{store.resolve()}"
