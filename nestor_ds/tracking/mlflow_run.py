"""MLflow run tracking that is safe to construct on every rank.

Every rank builds a :class:`Tracker` so training code needs no ``if rank == 0``
branches; only the enabled one (rank 0) imports MLflow and writes. All writes go
through an explicit :class:`mlflow.MlflowClient` bound to one run id, never the
fluent ``mlflow.*`` API, so several trackers in one process (tests, sweeps) do not
share hidden "active run" state.
"""

from __future__ import annotations

import json
import logging
import math
import os
import posixpath
import random
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from nestor_ds.errors import UserError

if TYPE_CHECKING:  # mlflow is imported lazily: disabled ranks never pay for it
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

# Limits of MLflow 3 (mlflow.utils.validation); mirrored here so flatten() and
# sanitize_name() work without importing mlflow. A test checks they still agree.
MAX_PARAM_VAL_LENGTH = 6000
MAX_KEY_LENGTH = 250
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

_RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
_TRUNCATION_MARK = "..."


def _value_to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), default=str)
    return str(value)


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - len(_TRUNCATION_MARK)] + _TRUNCATION_MARK


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Turn a nested config dict into MLflow params: dotted keys, string values.

    MLflow params are a flat string->string map, so ``{"model": {"depth": 4}}``
    becomes ``{"model.depth": "4"}``. Lists become JSON (readable, comparable),
    empty dicts are kept as ``"{}"`` so the key's presence is still recorded, and
    values longer than MLflow's limit are cut (ending in ``...``) instead of being
    rejected by the server.
    """
    if not isinstance(d, Mapping):
        raise TypeError(f"flatten() needs a dict, got {type(d).__name__}")
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            if value:
                out.update(flatten(value, name))
            else:
                out[name] = "{}"
        else:
            out[name] = _truncate(_value_to_str(value), MAX_PARAM_VAL_LENGTH)
    return out


def sanitize_name(name: str) -> str:
    """Map any string to a metric/param key MLflow accepts on every platform.

    MLflow rejects characters outside ``[A-Za-z0-9_-. /]`` (":" only works off
    Windows) and names that are not already a normalised relative path (``a//b``,
    ``/a``, ``./a``, ``a/``), because keys may be stored as files. Rejected
    characters become ``_``; empty, ``.`` and ``..`` path segments are dropped or
    replaced. Keys are also cut to MLflow's 250-character key limit.
    """
    cleaned = _BAD_NAME_CHARS.sub("_", str(name))
    parts = []
    for part in cleaned.split("/"):
        if part in ("", "."):
            continue
        parts.append("__" if part == ".." else part)
    result = "/".join(parts)[:MAX_KEY_LENGTH].rstrip("/") or "_"
    if posixpath.normpath(result) != result:  # e.g. a trailing "/.." left by the cut
        result = result.replace("/", "_")
    return result


def resolve_uri(config_uri: str | None, output_dir: Path) -> str:
    """Pick the tracking URI: the config's value, else ``$MLFLOW_TRACKING_URI``, else a
    SQLite file in the run's output folder.

    The fallback is SQLite rather than a ``mlruns`` folder because MLflow 3 refuses a
    plain directory as a tracking store. Empty strings count as unset.
    """
    if config_uri:
        return config_uri
    env = os.environ.get("MLFLOW_TRACKING_URI", "")
    if env:
        return env
    folder = Path(output_dir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _is_remote(uri: str) -> bool:
    """Servers choose (and may proxy) artifact storage themselves."""
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    return scheme in ("http", "https") or scheme.startswith("databricks")


class Tracker:
    """One MLflow run, written from rank 0 only; a silent no-op everywhere else.

    ``Tracker(uri, experiment, run_name, artifact_dir, enabled=rank == 0)``. The
    experiment is created on first use with ``artifact_dir`` as its artifact
    location (MLflow's default would be ``./mlruns`` relative to the working
    directory). Use as a context manager so a crash marks the run ``FAILED``.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str | None,
        artifact_dir: Path,
        enabled: bool,
        tags: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        """``run_id``: continue that run (a resumed job keeps logging into the run it started)."""
        self.enabled = bool(enabled)
        self.uri = uri
        self.experiment = experiment
        self._client: MlflowClient | None = None
        self._run_id: str | None = None
        self._finished = False
        self._warned_names: set[str] = set()
        if not self.enabled:
            return
        if not experiment:
            raise ValueError("Tracker needs a non-empty experiment name")
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            client = MlflowClient(tracking_uri=uri)
        except MlflowException as err:  # e.g. the file store, which MLflow 3 refuses: say so in one line
            raise UserError(f"tracking.uri={uri!r}: MLflow refuses it: {' '.join(str(err.message).split())}") from None
        if run_id is not None:
            run = client.get_run(run_id)
            if run.info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
            self._client, self._run_id = client, run_id
            log.info("MLflow run %s resumed at %s", run_id, uri)
            return
        experiment_id = self._experiment_id(client, experiment, Path(artifact_dir))
        # MLflow draws generated run names from `random`, which a training job has seeded:
        # draw from fresh entropy, then give the job its random state back
        state = random.getstate()
        random.seed()
        try:
            run = client.create_run(
                experiment_id,
                run_name=run_name or None,
                tags={str(k): _value_to_str(v) for k, v in (tags or {}).items()},
            )
        finally:
            random.setstate(state)
        self._client = client
        self._run_id = run.info.run_id
        log.info("MLflow run %s (%s) in experiment %r at %s", run.info.run_name, self._run_id, experiment, uri)

    def _experiment_id(self, client: MlflowClient, name: str, artifact_dir: Path) -> str:
        """Find or create the experiment, pinning new ones' artifacts to ``artifact_dir``."""
        from mlflow.exceptions import MlflowException

        location = None
        if not _is_remote(self.uri):
            artifact_dir = artifact_dir.expanduser().resolve()
            artifact_dir.mkdir(parents=True, exist_ok=True)
            location = artifact_dir.as_uri()
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                return client.create_experiment(name, artifact_location=location)
            except MlflowException:  # another job created it in between
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            log.warning("MLflow experiment %r was deleted; restoring it", name)
            client.restore_experiment(exp.experiment_id)
        if location is not None and exp.artifact_location.rstrip("/") != location.rstrip("/"):
            log.warning(
                "MLflow experiment %r already exists; its artifacts go to %s, not %s",
                name,
                exp.artifact_location,
                location,
            )
        return exp.experiment_id

    @property
    def run_id(self) -> str | None:
        """The MLflow run id (``None`` on disabled ranks)."""
        return self._run_id

    @property
    def client(self) -> MlflowClient | None:
        """The underlying client, for anything this class does not wrap."""
        return self._client

    def _target(self) -> tuple[MlflowClient, str] | None:
        """(client, run id) when this rank writes, ``None`` on disabled ranks."""
        if not self.enabled or self._client is None or self._run_id is None:
            return None
        if self._finished:
            raise RuntimeError(f"MLflow run {self._run_id} is already finished; create a new Tracker")
        return self._client, self._run_id

    def _key(self, name: str) -> str:
        key = sanitize_name(name)
        if key != name and name not in self._warned_names:
            self._warned_names.add(name)
            warnings.warn(f"MLflow key {name!r} logged as {key!r} (invalid characters or path form)", stacklevel=3)
        return key

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record the (nested) run config; flattened and sent in batches of 100,
        MLflow's per-request limit for params."""
        target = self._target()
        if target is None:
            return
        client, run_id = target
        from mlflow.entities import Param

        flat = {self._key(k): v for k, v in flatten(params).items()}
        entries = [Param(k, v) for k, v in flat.items()]
        for chunk in _chunks(entries, MAX_PARAMS_PER_BATCH):
            client.log_batch(run_id, params=chunk, synchronous=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalars at one step in as few requests as possible.

        Non-finite values are dropped with a warning: MLflow would store them, but
        they wreck plot axes and min/max run comparisons, and a NaN loss is better
        reported loudly than plotted quietly.
        """
        target = self._target()
        if target is None:
            return
        client, run_id = target
        from mlflow.entities import Metric

        step = int(step)
        now = int(time.time() * 1000)
        entries: dict[str, Metric] = {}
        dropped = []
        for name, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"metric {name!r} has non-numeric value {value!r}") from exc
            if not math.isfinite(number):
                dropped.append(f"{name}={number}")
                continue
            key = self._key(name)
            if key in entries:
                warnings.warn(f"metrics collide after sanitising: several names map to {key!r}", stacklevel=2)
            entries[key] = Metric(key, number, now, step)
        if dropped:
            warnings.warn(f"step {step}: dropped non-finite metrics {', '.join(dropped)}", RuntimeWarning, stacklevel=2)
        for chunk in _chunks(list(entries.values()), MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=chunk, synchronous=True)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Copy a file (or a whole folder) into the run's artifact store."""
        target = self._target()
        if target is None:
            return
        client, run_id = target
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"cannot log artifact {path}: no such file or folder")
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path)
        else:
            client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        """Store a string as an artifact file ``name`` (e.g. ``"config.yaml"``)."""
        target = self._target()
        if target is None:
            return
        client, run_id = target
        client.log_text(run_id, text, name)

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run ended; later calls are ignored so ``finish`` is safe to repeat."""
        if status not in _RUN_STATUSES:
            raise ValueError(f"run status must be one of {', '.join(_RUN_STATUSES)}, got {status!r}")
        if self._finished or self._client is None or self._run_id is None:
            return
        self._client.set_terminated(self._run_id, status)
        self._finished = True

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("KILLED")
        else:
            self.finish("FAILED")
