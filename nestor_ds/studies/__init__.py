"""Studies: the paper's comparisons as one command (``nestor-ds study run|report FILE``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nestor_ds.studies.spec import StudySpec, load_study


def study_dir(spec: StudySpec, out: str | Path | None) -> Path:
    """The study's folder: ``out``, or ``runs/studies/<name>``."""
    return Path(out) if out else Path("runs") / "studies" / spec.name


def run_study(
    path: str | Path,
    out: str | Path | None = None,
    launcher: str = "torchrun",
    parallel: int = 1,
    overrides: dict[str, Any] | None = None,
) -> int:
    """Run (or finish) every run of the study; 0 when all are finished. The report is written at the end."""
    from nestor_ds.studies.runner import StudyRunner

    spec = load_study(path, overrides)
    runner = StudyRunner(spec, study_dir(spec, out), launcher, parallel)  # type: ignore[arg-type]
    status = runner.run()
    report = report_study(path, out, overrides)
    print(f"report: {report}", flush=True)
    return status


def report_study(path: str | Path, out: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Path:
    """Write the study's report from its finished runs; returns REPORT.md's path."""
    from nestor_ds.studies.report import write_report
    from nestor_ds.studies.runner import StudyRunner

    spec = load_study(path, overrides)
    runner = StudyRunner(spec, study_dir(spec, out))
    state = runner.out / "study.json"
    parent = None
    if state.is_file():
        import json

        parent = json.loads(state.read_text()).get("parent_run_id")
    return write_report(spec, runner.runs(parent), runner.out, runner.uri)
