"""Tracker against a real SQLite MLflow store: what is logged must be readable back."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nestor_ds.tracking import mlflow_run
from nestor_ds.tracking.mlflow_run import Tracker, flatten, resolve_uri, sanitize_name


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One database for the module: creating an MLflow schema costs ~1-2 s."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}", root / "artifacts"


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_limits_match_installed_mlflow() -> None:
    from mlflow.utils import validation

    assert mlflow_run.MAX_PARAM_VAL_LENGTH == validation.MAX_PARAM_VAL_LENGTH
    assert mlflow_run.MAX_KEY_LENGTH == validation.MAX_ENTITY_KEY_LENGTH
    assert mlflow_run.MAX_PARAMS_PER_BATCH == validation.MAX_PARAMS_TAGS_PER_BATCH
    assert mlflow_run.MAX_METRICS_PER_BATCH == validation.MAX_METRICS_PER_BATCH


def test_flatten_nested_lists_and_long_values() -> None:
    flat = flatten(
        {
            "model": {"depth": 4, "moe": {"top_k": 2}},
            "data": {"names": ["a", "b"]},
            "lr": 1e-3,
            "empty": {},
            "path": Path("/x/y"),
            "long": "z" * 10_000,
        }
    )
    assert flat["model.depth"] == "4"
    assert flat["model.moe.top_k"] == "2"
    assert flat["data.names"] == '["a", "b"]'
    assert flat["lr"] == "0.001"
    assert flat["empty"] == "{}"
    assert flat["path"] == "/x/y"
    assert len(flat["long"]) == mlflow_run.MAX_PARAM_VAL_LENGTH and flat["long"].endswith("...")
    assert all(isinstance(v, str) for v in flat.values())
    with pytest.raises(TypeError, match="needs a dict"):
        flatten([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("train/loss", "train/loss"),
        ("eval/l2re@ns2d", "eval/l2re_ns2d"),
        ("a//b/", "a/b"),
        ("/abs", "abs"),
        ("./x/../y", "x/__/y"),
        ("ü:x", "__x"),
        ("", "_"),
    ],
)
def test_sanitize_name(name: str, expected: str) -> None:
    from mlflow.utils.validation import _validate_metric_name

    assert sanitize_name(name) == expected
    _validate_metric_name(sanitize_name(name))  # MLflow itself accepts the result


def test_resolve_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run" / "out"
    assert resolve_uri(None, out) == f"sqlite:///{out.resolve() / 'mlflow.db'}"
    assert out.is_dir()
    assert resolve_uri("", out).startswith("sqlite:////")  # absolute path: four slashes
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert resolve_uri(None, out) == "http://tracking:5000"
    assert resolve_uri("sqlite:////tmp/explicit.db", out) == "sqlite:////tmp/explicit.db"


def test_params_metrics_artifacts_land(store: tuple[str, Path], tmp_path: Path) -> None:
    uri, artifacts = store
    params = {"model": {f"p{i:03d}": i for i in range(250)}, "data": {"datasets": ["ns2d", "swe"]}}
    report = tmp_path / "report.txt"
    report.write_text("hello")
    folder = tmp_path / "figs"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG fake")
    with Tracker(uri, "unit", "run-a", artifacts, enabled=True, tags={"seed": 7}) as tracker:
        tracker.log_params(params)  # 251 params: three log_batch calls
        tracker.log_metrics({"train/loss": 1.0, "eval/l2re": 0.5}, step=0)
        with pytest.warns(RuntimeWarning, match=r"step 10: dropped non-finite metrics train/loss=nan"):
            tracker.log_metrics({"train/loss": math.nan, "eval/l2re": 0.25}, step=10)
        with pytest.warns(UserWarning, match="logged as 'grad_norm_enc'"):
            tracker.log_metrics({"grad_norm@enc": 3.0}, step=10)
        tracker.log_artifact(report)
        tracker.log_artifact(folder, "plots")
        tracker.log_text("model: {depth: 4}\n", "config.yaml")
        with pytest.raises(FileNotFoundError, match="missing.txt"):
            tracker.log_artifact(tmp_path / "missing.txt")
        run_id = tracker.run_id

    client = _client(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run-a"
    assert run.data.tags["seed"] == "7"
    assert len(run.data.params) == 251
    assert run.data.params["model.p123"] == "123"
    assert run.data.params["data.datasets"] == '["ns2d", "swe"]'
    assert run.data.metrics == {"train/loss": 1.0, "eval/l2re": 0.25, "grad_norm_enc": 3.0}
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "eval/l2re")] == [(0, 0.5), (10, 0.25)]
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [0]
    listed = {a.path for a in client.list_artifacts(run_id)}
    assert listed == {"report.txt", "plots", "config.yaml"}
    assert {a.path for a in client.list_artifacts(run_id, "plots")} == {"plots/a.png"}
    on_disk = artifacts.resolve() / run_id / "artifacts"  # <artifact_location>/<run id>/artifacts
    assert (on_disk / "config.yaml").read_text() == "model: {depth: 4}\n"
    assert client.get_experiment(run.info.experiment_id).artifact_location == artifacts.resolve().as_uri()


def test_disabled_tracker_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with Tracker(f"sqlite:///{tmp_path / 'never.db'}", "unit", "r", tmp_path / "art", enabled=False) as tracker:
        tracker.log_params({"a": 1})
        tracker.log_metrics({"loss": 1.0}, step=1)
        tracker.log_artifact(tmp_path / "a.txt")
        tracker.log_artifact(tmp_path / "does-not-exist")  # not even checked off rank 0
        tracker.log_text("t", "t.txt")
    assert tracker.run_id is None and tracker.client is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_exception_marks_run_failed_and_trackers_are_independent(store: tuple[str, Path]) -> None:
    uri, artifacts = store
    other = Tracker(uri, "unit-2", "survivor", artifacts, enabled=True)
    with pytest.raises(RuntimeError, match="boom"):
        with Tracker(uri, "unit-2", "crasher", artifacts, enabled=True) as tracker:
            tracker.log_metrics({"loss": 2.0}, step=1)
            other.log_metrics({"loss": 9.0}, step=1)
            raise RuntimeError("boom")
    other.finish()
    other.finish()  # repeating is harmless
    client = _client(uri)
    crashed, survived = client.get_run(tracker.run_id), client.get_run(other.run_id)
    assert crashed.info.status == "FAILED" and crashed.data.metrics == {"loss": 2.0}
    assert survived.info.status == "FINISHED" and survived.data.metrics == {"loss": 9.0}
    assert crashed.info.experiment_id == survived.info.experiment_id  # the experiment is reused
    with pytest.raises(RuntimeError, match="already finished"):
        other.log_metrics({"loss": 1.0}, step=2)
    with pytest.raises(ValueError, match="run status must be one of"):
        other.finish("DONE")


def test_a_store_mlflow_refuses_is_one_line_naming_the_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow 3 refuses a file store unless told otherwise: the run says so in one UserError, no traceback."""
    from nestor_ds.errors import UserError

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = f"file:{tmp_path / 'mlruns'}"
    with pytest.raises(UserError) as err:
        Tracker(uri, "exp", "r", tmp_path / "artifacts", enabled=True)
    text = str(err.value)
    assert text.startswith(f"tracking.uri={uri!r}: MLflow refuses it") and "sqlite" in text and "\n" not in text
