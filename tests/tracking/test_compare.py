"""compare_runs / format_* against two real runs in a SQLite MLflow store."""

from __future__ import annotations

import pytest

from nestor_ds.tracking.compare import compare_runs, format_markdown, format_terminal
from nestor_ds.tracking.mlflow_run import Tracker

BASE = {"model": {"variant": "nestor", "depth": 4, "ablation": {"sub_moe": True}}, "train": {"lr": 1e-3, "seed": 0}}
ABLATED = {"model": {"variant": "nestor", "depth": 4, "ablation": {"sub_moe": False}}, "train": {"lr": 3e-4, "seed": 0}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Experiment "ablation" with runs "baseline" and "no_sub_moe"; experiment "other"
    with two runs both named "dup" (the second one newer)."""
    root = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    ids = {"uri": uri}
    with Tracker(uri, "ablation", "baseline", root / "art", enabled=True) as t:
        t.log_params(BASE)
        t.log_metrics({"train/loss": 0.9, "eval/l2re": 0.5}, step=0)
        t.log_metrics({"train/loss": 0.123456, "eval/l2re": 0.0456789}, step=100)
        t.log_metrics({"train/loss": 7.0}, step=50)  # logged later, but an earlier step
        ids["baseline"] = t.run_id
    with Tracker(uri, "ablation", "no_sub_moe", root / "art", enabled=True) as t:
        t.log_params(ABLATED)
        t.log_metrics({"train/loss": 0.25, "eval/l2re": 0.0612, "moe/dropped": 0.015}, step=100)
        ids["ablated"] = t.run_id
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("other", artifact_location=(root / "other").as_uri())
    for i, start in enumerate((1_000, 2_000)):
        run = client.create_run(exp, run_name="dup", start_time=start)
        client.log_metric(run.info.run_id, "train/loss", float(i))
        ids[f"dup{i}"] = run.info.run_id
    return ids


def test_compare_by_name_finals_and_differing_params(runs: dict[str, str]) -> None:
    result = compare_runs(runs["uri"], ["baseline", "no_sub_moe"], experiment="ablation")
    assert [r.run_id for r in result.runs] == [runs["baseline"], runs["ablated"]]
    assert [r.label for r in result.runs] == ["baseline", "no_sub_moe"]
    assert result.metrics["train/loss"] == {runs["baseline"]: 0.123456, runs["ablated"]: 0.25}  # latest step
    assert result.metrics["moe/dropped"] == {runs["ablated"]: 0.015}
    assert set(result.param_diffs) == {"model.ablation.sub_moe", "train.lr"}  # equal keys are hidden
    assert result.param_diffs["train.lr"] == {runs["baseline"]: "0.001", runs["ablated"]: "0.0003"}
    assert result.metric_names() == ["eval/l2re", "moe/dropped", "train/loss"]


def test_compare_by_id_across_experiments_matches(runs: dict[str, str]) -> None:
    by_id = compare_runs(runs["uri"], [runs["baseline"], "no_sub_moe"])  # id and name mixed, no experiment
    by_name = compare_runs(runs["uri"], ["baseline", "no_sub_moe"], experiment="ablation")
    assert by_id.metrics == by_name.metrics and by_id.param_diffs == by_name.param_diffs


def test_markdown_and_terminal_tables(runs: dict[str, str]) -> None:
    result = compare_runs(runs["uri"], ["baseline", "no_sub_moe"], experiment="ablation")
    md = format_markdown(result)
    assert "### Metrics" in md and "### Config differences" in md
    assert "| metric | baseline | no_sub_moe |" in md
    assert "| eval/l2re | 0.04568 | 0.0612 |" in md
    assert "| train/loss | 0.1235 | 0.25 |" in md
    assert "| moe/dropped | – | 0.015 |" in md
    assert "| train.lr | 0.001 | 0.0003 |" in md
    assert md.index("eval/l2re") < md.index("moe/dropped") < md.index("train/loss")
    assert "model.depth" not in md
    text = format_terminal(result)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("metric"))
    row = next(line for line in lines if line.startswith("train/loss"))
    assert "0.1235" in row and "0.25" in row
    assert len(row) == len(header)  # numbers right-aligned under the run names
    assert "|" not in text


def test_names_resolve_to_newest_and_empty_list_takes_experiment(runs: dict[str, str]) -> None:
    result = compare_runs(runs["uri"], ["dup"], experiment="other")
    assert [r.run_id for r in result.runs] == [runs["dup1"]]
    everything = compare_runs(runs["uri"], [], experiment="other")
    assert [r.run_id for r in everything.runs] == [runs["dup1"], runs["dup0"]]  # newest first
    assert [r.label for r in everything.runs] == [f"dup ({runs['dup1'][:8]})", f"dup ({runs['dup0'][:8]})"]


def test_unknown_names_are_clear_errors(runs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="'no_such_run'"):
        compare_runs(runs["uri"], ["baseline", "no_such_run"], experiment="ablation")
    with pytest.raises(ValueError, match="'no_sub_moe' in experiment 'other'"):
        compare_runs(runs["uri"], ["no_sub_moe"], experiment="other")
    with pytest.raises(ValueError, match="no MLflow experiment named 'nope'"):
        compare_runs(runs["uri"], ["baseline"], experiment="nope")
    with pytest.raises(ValueError, match="needs run ids/names or an experiment"):
        compare_runs(runs["uri"], [])
