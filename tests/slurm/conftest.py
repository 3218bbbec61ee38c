"""Fixtures for the Slurm job scripts: a real one-node Slurm, small shards, job polling."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nestor_ds.studies.runner import FINAL

REPO = Path(__file__).resolve().parents[2]
SETS = ["ns2d_fno_1e-3", "swe_pdb"]
UNAVAILABLE = 3  # scripts/slurm_up.sh: the packages are missing and cannot be installed
FINAL_STATES = FINAL  # the job states after which Slurm does nothing more, as the study runner knows them


@pytest.fixture(scope="session")
def shards(shared_shards) -> Path:
    """Two small data sets made with the CLI as a user would, 8 trajectories each (shared with the studies)."""
    return shared_shards(SETS, 8)


@pytest.fixture(scope="session")
def shard_args(shards: Path) -> list[str]:
    """launch/train.py arguments that point the tiny config at these shards."""
    names = ", ".join(f"{{name: {s}}}" for s in SETS)
    return ["--set", f"data.root={shards}", "--set", f"data.datasets=[{names}]"]


def job_env(**extra: str) -> dict[str, str]:
    """The environment sbatch passes on to the job: CPU ranks, no variables of an enclosing Slurm job."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    if not (REPO / ".venv" / "bin" / "python").exists():
        env["PYTHON"] = sys.executable  # the job scripts default to the repository's .venv
    env.update(extra)
    return env


class Slurm:
    """The running cluster: its SLURM_CONF, and helpers around sbatch/scontrol."""

    def __init__(self, conf: str) -> None:
        self.conf = conf
        self.dir = Path(conf).parent

    def env(self, **extra: str) -> dict[str, str]:
        return job_env(SLURM_CONF=self.conf, **extra)

    def run(self, *cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, env=kw.pop("env", self.env()), **kw)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    def sbatch(self, *args: str, env: dict[str, str], cwd: Path) -> str:
        out = self.run("sbatch", "--parsable", *args, env=env, cwd=cwd)
        return out.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -o` as a dict (works without accounting storage, unlike sacct)."""
        line = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(re.findall(r"(?:^|\s)([A-Za-z][\w/:]*)=(\S*)", line))

    def wait(self, job_id: str, until, timeout: float, what: str, log: Path | None = None, poll: float = 0.5):
        """Poll until ``until(fields)`` is true; returns the fields. Fails with the job's state and logs."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self.job(job_id)
            if until(fields):
                return fields
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id}: no {what} within {timeout:.0f} s; state {fields.get('JobState')}"
                    f" restarts {fields.get('Restarts')}\n{self.diagnostics(log)}"
                )
            time.sleep(poll)

    def diagnostics(self, log: Path | None) -> str:
        parts = []
        if log is not None and log.exists():
            parts.append(f"--- {log} (end)\n{log.read_text(errors='replace')[-6000:]}")
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.dir / "log" / name
            if path.exists():
                parts.append(f"--- {path} (end)\n{path.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)

    @staticmethod
    def finished(fields: dict[str, str]) -> bool:
        return fields.get("JobState") in FINAL_STATES

    def cancel(self, job_id: str) -> None:
        """End a job for good: without Requeue=0 the trainer would answer scancel's SIGTERM with a requeue."""
        if not self.finished(self.job(job_id)):
            self.run("scontrol", "update", f"JobId={job_id}", "Requeue=0", check=False)
            self.run("scancel", job_id, check=False)


@pytest.fixture(scope="module")
def slurm():
    """A real one-node Slurm on localhost, up for the module, down afterwards.

    Skips only when scripts/slurm_up.sh says the packages cannot be installed (exit 3:
    not root, no apt-get, no package registry); any other failure is an error.
    """
    up = subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm_up.sh")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
        env=job_env(),
    )
    if up.returncode == UNAVAILABLE:
        reason = (up.stderr.strip().splitlines() or ["slurm_up.sh exited 3"])[-1]
        pytest.skip(f"no Slurm on this machine and it cannot be installed: {reason}")
    if up.returncode != 0:
        raise RuntimeError(f"scripts/slurm_up.sh failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    match = re.search(r"^export SLURM_CONF=(\S+)$", up.stdout, re.M)
    assert match, f"slurm_up.sh printed no SLURM_CONF line:\n{up.stdout}"
    cluster = Slurm(match.group(1))
    try:
        yield cluster
    finally:
        down = subprocess.run(
            ["bash", str(REPO / "scripts" / "slurm_down.sh")],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
            env=cluster.env(),
        )
        assert down.returncode == 0, f"scripts/slurm_down.sh failed:\n{down.stdout}\n{down.stderr}"
