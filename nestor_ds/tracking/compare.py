"""Side-by-side comparison of MLflow runs: final metrics and the config keys that differ.

Meant for ablation write-ups ("what changed, and what did it do?"): the metric
table shows each run's last logged value, the config table hides every param that
is identical across the runs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

MISSING = "–"
DEFAULT_MAX_RUNS = 10
_RUN_ID = re.compile(r"[0-9a-f]{32}")


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


def _quote(value: str) -> str | None:
    """Quote a string for an MLflow filter; ``None`` when it holds both quote kinds."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _all_pages(fetch) -> list:  # fetch(page_token) -> PagedList
    items, token = [], None
    while True:
        page = fetch(token)
        items.extend(page)
        token = page.token
        if not token:
            return items


def _experiment_ids(client: MlflowClient, experiment: str | None) -> list[str]:
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise ValueError(f"no MLflow experiment named {experiment!r} at {client.tracking_uri}")
        return [exp.experiment_id]
    exps = _all_pages(lambda token: client.search_experiments(page_token=token))
    return [e.experiment_id for e in exps]


def _find_by_name(client: MlflowClient, name: str, experiment_ids: list[str]) -> Run | None:
    if not experiment_ids:
        return None
    quoted = _quote(name)
    newest_first = ["attributes.start_time DESC"]
    if quoted is not None:
        hits = client.search_runs(
            experiment_ids, filter_string=f"attributes.run_name = {quoted}", max_results=1, order_by=newest_first
        )
        return hits[0] if hits else None
    runs = _all_pages(
        lambda token: client.search_runs(experiment_ids, order_by=newest_first, page_token=token)
    )
    return next((r for r in runs if r.info.run_name == name), None)


def _resolve(client: MlflowClient, ref: str, experiment_ids: list[str], experiment: str | None) -> Run:
    from mlflow.exceptions import MlflowException

    if _RUN_ID.fullmatch(ref):
        try:
            return client.get_run(ref)
        except MlflowException:
            pass  # not an id after all: maybe a run named like one
    run = _find_by_name(client, ref, experiment_ids)
    if run is None:
        where = f"experiment {experiment!r}" if experiment is not None else "any experiment"
        raise ValueError(f"no MLflow run with id or name {ref!r} in {where} at {client.tracking_uri}")
    return run


def _labels(runs: list[Run]) -> list[str]:
    names = [r.info.run_name or r.info.run_id[:8] for r in runs]
    return [
        f"{name} ({r.info.run_id[:8]})" if names.count(name) > 1 else name for name, r in zip(names, runs)
    ]


def compare_runs(uri: str, runs: list[str], experiment: str | None = None) -> ComparisonResult:
    """Collect what differs between runs given by id or name.

    Names resolve within ``experiment`` when given, else across all active
    experiments; a name used by several runs means the newest. With no ``runs``,
    the newest ``DEFAULT_MAX_RUNS`` runs of ``experiment`` are compared.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    refs = [str(r) for r in runs]
    if not refs:
        if experiment is None:
            raise ValueError("compare_runs needs run ids/names or an experiment to take runs from")
        ids = _experiment_ids(client, experiment)
        found = list(
            client.search_runs(ids, max_results=DEFAULT_MAX_RUNS, order_by=["attributes.start_time DESC"])
        )
        if not found:
            raise ValueError(f"MLflow experiment {experiment!r} has no runs at {uri}")
    else:
        ids = _experiment_ids(client, experiment)
        found = []
        seen: set[str] = set()
        for ref in refs:
            run = _resolve(client, ref, ids, experiment)
            if run.info.run_id not in seen:  # the same run named twice (id and name) shows once
                seen.add(run.info.run_id)
                found.append(run)

    summaries = [
        RunSummary(
            run_id=r.info.run_id,
            run_name=r.info.run_name or "",
            experiment_id=r.info.experiment_id,
            status=r.info.status,
            start_time=r.info.start_time,
            label=label,
        )
        for r, label in zip(found, _labels(found))
    ]
    result = ComparisonResult(runs=summaries)
    # run.data.metrics already holds each metric's latest value (highest step, then time).
    for r in found:
        for key, value in r.data.metrics.items():
            result.metrics.setdefault(key, {})[r.info.run_id] = value
    keys = sorted({k for r in found for k in r.data.params})
    for key in keys:
        values = {r.info.run_id: r.data.params.get(key) for r in found}
        if len(set(values.values())) > 1:
            result.param_diffs[key] = values
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
    metric_rows = [
        [name] + [_fmt(result.metrics[name].get(i)) for i in ids] for name in result.metric_names()
    ]
    param_rows = [
        [key] + [_clip(result.param_diffs[key].get(i), max_cell) for i in ids] for key in result.param_diffs
    ]
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
