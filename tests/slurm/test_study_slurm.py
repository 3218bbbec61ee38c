"""`nestor-ds study run --launcher slurm` on the real one-node Slurm: each run an sbatch job, the fine-tuning
arm an afterok dependency of the pre-training one, the command polling both to the end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.multiproc]
REPO = Path(__file__).resolve().parents[2]


def test_two_arm_study_as_slurm_jobs(slurm, shards: Path, tmp_path: Path) -> None:
    from conftest import SETS

    study = {
        "name": "slurm_pair",
        "data": "generated",
        "base": {
            "config": "configs/tiny_cpu.yaml",
            "ds_config": "ds_configs/cpu_fp32.json",
            "set": {
                "parallel.ep_size": 1,
                "data.root": str(shards),
                "data.datasets": [{"name": s} for s in SETS],
                "train.log_every": 1,
                "train.eval_every": 100000,
                "train.eval_trajectories": 1,
            },
        },
        "seeds": [0],
        "budget": {"steps": 4},
        "arms": [
            {"name": "pretrained"},
            {"name": "finetuned", "mode": "finetune", "init_from": "arm:pretrained", "budget": {"steps": 3}},
        ],
    }
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(study))
    out = tmp_path / "study"
    done = subprocess.run(
        [sys.executable, "-m", "nestor_ds", "study", "run", str(spec), "--out", str(out), "--launcher", "slurm"],
        cwd=tmp_path,
        env=slurm.env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:] + slurm.diagnostics(None)
    jobs = dict(re.findall(r"(\w+)/seed0: submitted as job (\d+)", log))
    assert set(jobs) == {"pretrained", "finetuned"}
    assert f"finetuned/seed0: job {jobs['finetuned']} finished" in log
    finetune_out = (out / "finetuned" / "seed0" / f"slurm-{jobs['finetuned']}.out").read_text()
    assert f"--weights {out / 'pretrained' / 'seed0' / 'checkpoints'}" in finetune_out  # started from arm 1
    assert "(finetune) run 1" in finetune_out
    report = (out / "report.md").read_text()
    assert "| data set | pretrained | finetuned |" in report and "Incomplete" not in report
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("study-slurm_pair").experiment_id])
    names = sorted(r.info.run_name for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert names == ["finetuned/seed0", "pretrained/seed0"]
